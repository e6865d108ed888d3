"""Generation: instruction tuning and continued pretraining of a decoder (causal language modelling).

Data: an Alpaca file (`instruction`, optional `input`, `output`), a chat file (`messages`: `role` / `content`, or
the ShareGPT form `conversations`: `from` / `value`), or plain text (one document per row of a `text` column, or a
`.txt` file, one document per line). Placeholders such as `{{name}}` are filled from `DataSpec.fill` before
anything else. A conversation is rendered with the model's own chat template (a plain `### Instruction:` /
`### Response:` format when it has none) one turn at a time, so that the loss counts the assistant's tokens only
(or every token, `DataSpec.train_on_prompts`); the maximum length cuts from the right and the cut conversations are
counted. The head is the model's own language-model head, frozen (it is not part of a vector file). Evaluation:
the validation loss over the answers' tokens, its perplexity and token accuracy, and a few validation prompts
answered greedily (`samples`), so a run shows how its answers change. Generation decodes token by token over the
key-value cache (prompt tokens of WARP / JR-WARP inserted once, before the text). A merged model is the family's
stock `AutoModelForCausalLM` with the tokenizer and its chat template."""

from __future__ import annotations

import contextlib
import math
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import DataSpec, Decoding
from ..data import Table, cell_text, is_missing, open_table, require_rows
from ..errors import DataError, ModelError
from .base import DataView, Task
from .common import Encoder, open_training_data, split_and_sample
from .registry import register

GENERATION = "generation"  # the problem a generate run records (vector metadata `task`)
IGNORED = -100  # the target of a token the loss leaves out (cross-entropy's ignore_index)
SAMPLE_PROMPTS = 3  # validation prompts answered at every evaluation
SAMPLE_TOKENS = 48  # the longest of those answers, in tokens
TEXT_ROLE = "text"  # the one turn of a plain-text document: every token is learnt
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w-]*)\s*\}\}")
_ALPACA_OUTPUTS = ("output", "response", "answer", "completion")
_TEXT_NAMES = ("text", "document", "content")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bot": "assistant", "model": "assistant", "system": "system"}
_PLAIN = {"system": "{}\n\n", "user": "### Instruction:\n{}\n\n### Response:\n", "assistant": "{}{eos}\n\n"}

Turn = tuple[str, str]  # (role: system / user / assistant / text, content)


# --- examples ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversations:
    """Conversations (or documents) as turns; `labels` is the same conversations when they carry answers to score
    (training and validation data), empty for prompts to answer."""

    conversations: tuple[tuple[Turn, ...], ...]
    labels: tuple = ()

    def __len__(self) -> int:
        return len(self.conversations)

    def take(self, count: int) -> Conversations:
        return self.select(range(min(count, len(self))))

    def select(self, rows: Sequence[int]) -> Conversations:
        picked = tuple(self.conversations[i] for i in rows)
        return Conversations(picked, picked if self.labels else ())

    @property
    def texts(self) -> tuple[str, ...]:
        """What each example asks (its last user turn), or a document's opening, for display."""
        return tuple(question(turns) for turns in self.conversations)

    @classmethod
    def of(cls, conversations: Sequence[Sequence[Turn]], labelled: bool) -> Conversations:
        kept = tuple(tuple(turns) for turns in conversations)
        return cls(kept, kept if labelled else ())


def question(turns: Sequence[Turn]) -> str:
    asked = [content for role, content in turns if role == "user"]
    return asked[-1] if asked else turns[0][1][:200]


@dataclass(frozen=True)
class GenerateData:
    train: Conversations
    validation: Conversations
    layout: str  # alpaca / messages / sharegpt / text
    columns_read: dict
    validation_source: str
    notes: tuple[str, ...]
    label_names: None = None
    problem: str = GENERATION

    @property
    def num_labels(self) -> int:
        return 1


# --- reading ----------------------------------------------------------------------------------------------------
def _by_name(frame: pd.DataFrame) -> dict[str, Any]:
    return {str(column).strip().lower(): column for column in frame.columns}


def data_layout(frame: pd.DataFrame, spec_text: str | None = None) -> tuple[str, dict]:
    """(layout, columns by role) of a table of instruction, chat or text data; a DataError saying what is missing."""
    names = _by_name(frame)
    if spec_text:
        if spec_text not in frame.columns:
            raise DataError(f"No column '{spec_text}'; columns: {', '.join(map(str, frame.columns))}.")
        return "text", {"text": spec_text}
    for column, layout in (("messages", "messages"), ("conversations", "sharegpt")):
        if column in names:
            return layout, {"text": names[column]}
    if "instruction" in names:
        output = next((names[name] for name in _ALPACA_OUTPUTS if name in names), None)
        return "alpaca", {"text": names["instruction"], "text_pair": names.get("input"), "label": output,
                          "system": names.get("system")}
    text = next((names[name] for name in _TEXT_NAMES if name in names), None)
    if text is not None:
        return "text", {"text": text}
    raise DataError("A generate task reads instruction data (columns 'instruction' and 'output', optional 'input'), "
                    "chat data (a 'messages' or 'conversations' column) or plain text (a 'text' column, or a .txt "
                    f"file); columns here: {', '.join(map(str, frame.columns))}.")


def recognises_frame(frame: pd.DataFrame) -> bool:
    names = _by_name(frame)
    return bool({"messages", "conversations", "instruction"} & set(names)) or list(names) == ["text"]


def fill_values(items: Sequence[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, equals, value = str(item).partition("=")
        if not equals or not PLACEHOLDER.fullmatch("{{" + name.strip() + "}}"):
            raise DataError(f"A fill value is name=value (e.g. name=Ada), not {item!r}.")
        values[name.strip()] = value
    return values


def placeholders(conversations: Sequence[Sequence[Turn]]) -> list[str]:
    """The placeholder names used, in order of first use."""
    found: dict[str, None] = {}
    for turns in conversations:
        for _, content in turns:
            found.update(dict.fromkeys(PLACEHOLDER.findall(content)))
    return list(found)


def find_placeholders(source: str) -> list[str]:
    """The placeholders of a data file (for the app's Data page, which asks for their values)."""
    table = open_table(source)
    layout, columns = data_layout(table.frame)
    return placeholders([_row_turns(row, layout, columns, f"Row {number} of {table.name}")
                         for number, row in enumerate(table.frame.to_dict("records"), start=1)])


def _filled(conversations: list[tuple[Turn, ...]], values: dict[str, str], name: str,
            notes: list[str]) -> list[tuple[Turn, ...]]:
    used = placeholders(conversations)
    missing = [key for key in used if key not in values]
    if missing:
        shown = ", ".join("{{" + key + "}}" for key in missing)
        example = " ".join(f"--fill {key}=..." for key in missing)
        raise DataError(f"{name} has placeholders to fill in: {shown}; give their values ({example} in the CLI; the "
                        "app asks on the Data page).")
    unused = sorted(set(values) - set(used))
    if unused:
        notes.append(f"Fill value(s) {', '.join(unused)} match no placeholder in {name}.")
    if not used:
        return conversations

    def fill(text: str) -> str:
        return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)

    return [tuple((role, fill(content)) for role, content in turns) for turns in conversations]


def _turns_of(cell: Any, layout: str, where: str) -> list[Turn]:
    if not isinstance(cell, (list, tuple, np.ndarray)):
        raise DataError(f"{where} holds {type(cell).__name__}, not a list of turns.")
    role_key, content_key = ("from", "value") if layout == "sharegpt" else ("role", "content")
    turns = []
    for turn in cell:
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise DataError(f"{where} has a turn that is not an object with '{role_key}' and '{content_key}'.")
        role = str(turn[role_key]).strip().lower()
        role = _SHAREGPT_ROLES.get(role, role)
        if role not in ("system", "user", "assistant"):
            raise DataError(f"{where} has a turn by {turn[role_key]!r}; roles are system, user and assistant.")
        turns.append((role, cell_text(turn[content_key])))
    return turns


def _row_turns(row: dict, layout: str, columns: dict, where: str) -> list[Turn]:
    if layout == "text":
        return [(TEXT_ROLE, cell_text(row[columns["text"]]))]
    if layout != "alpaca":
        return _turns_of(row[columns["text"]], layout, where)
    prompt = cell_text(row[columns["text"]]).strip()
    extra = row.get(columns.get("text_pair")) if columns.get("text_pair") is not None else None
    if extra is not None and not is_missing(extra) and cell_text(extra).strip():
        prompt = f"{prompt}\n\n{cell_text(extra).strip()}"
    system = row.get(columns["system"]) if columns.get("system") is not None else None
    turns = [("system", cell_text(system))] if system is not None and not is_missing(system) and cell_text(
        system).strip() else []
    turns.append(("user", prompt))
    if columns.get("label") is not None:
        answer = row[columns["label"]]
        turns.append(("assistant", "" if is_missing(answer) else cell_text(answer)))
    return turns


def _check_training_turns(turns: list[Turn], where: str) -> None:
    if turns[0][0] == TEXT_ROLE:
        if not turns[0][1].strip():
            raise DataError(f"{where} is an empty document; remove it.")
        return
    if not any(role == "assistant" for role, _ in turns):
        raise DataError(f"{where} has no assistant turn: nothing to learn.")
    if turns[-1][0] != "assistant":
        raise DataError(f"{where} ends with a {turns[-1][0]} turn; for training the last turn must be the "
                        "assistant's answer (remove the unanswered turn).")
    empty = next((number for number, (role, content) in enumerate(turns, start=1)
                  if role == "assistant" and not content.strip()), None)
    if empty is not None:
        raise DataError(f"{where} has an empty answer (turn {empty}); give it text or remove the row.")
    if turns[0][0] == "assistant" or (turns[0][0] == "system" and len(turns) > 1 and turns[1][0] == "assistant"):
        raise DataError(f"{where} starts with the assistant's turn; a conversation starts with the user.")


def _conversations(table: Table, layout: str, columns: dict, labelled: bool,
                   where_prefix: str) -> list[tuple[Turn, ...]]:
    found = []
    for number, row in enumerate(table.frame.to_dict("records"), start=1):
        where = f"Row {number} of {where_prefix}"
        turns = _row_turns(row, layout, columns, where)
        if not turns:
            raise DataError(f"{where} is empty.")
        if labelled:
            _check_training_turns(turns, where)
        elif turns[-1][0] == "assistant" and len(turns) > 1:  # an answer given with a prompt is ignored
            turns = turns[:-1]
        found.append(tuple(turns))
    return found


def _read(table: Table, text_column: str | None, values: dict, notes: list[str]) -> tuple[str, dict, list]:
    layout, columns = data_layout(table.frame, text_column)
    if layout == "alpaca" and columns["label"] is None:
        raise DataError(f"{table.name} has instructions but no output column ({', '.join(_ALPACA_OUTPUTS)}); "
                        "training needs the answers.")
    conversations = _conversations(table, layout, columns, labelled=True, where_prefix=table.name)
    return layout, columns, _filled(conversations, values, table.name, notes)


def load_generate_data(spec: DataSpec, seed: int) -> GenerateData:
    table, held_out, notes = open_training_data(spec, seed)
    values = fill_values(spec.fill)
    layout, columns, conversations = _read(table, spec.text_column, values, notes)
    rng = np.random.default_rng(seed)
    train = Conversations.of(conversations, labelled=True)
    if held_out is not None:
        validation = Conversations.of(_read(held_out, spec.text_column, values, notes)[2], labelled=True)
        validation_source = held_out.origin
    else:
        validation, validation_source = None, ""
    train, validation, validation_source = split_and_sample(train, validation, validation_source, spec, seed, rng,
                                                            notes, table.name, "example")
    kept = {role: column for role, column in columns.items() if column is not None}
    return GenerateData(train, validation, layout, {**kept, "layout": layout, "fill": dict(values)},
                        validation_source, tuple(notes))


def load_recorded(source: str, metadata: dict, with_answers: bool) -> Conversations:
    """Every row of another file, read as the run read its data (its plain-text column, its fill values): with the
    answers to score, or as prompts to answer (an answer column is then ignored)."""
    table = open_table(source)
    require_rows(table)
    columns = metadata.get("columns") or {}
    text_column = columns["text"] if columns.get("layout") == "text" else None
    fill = columns.get("fill") or {}
    if with_answers:
        return Conversations.of(_read(table, text_column, fill, [])[2], labelled=True)
    layout, read = data_layout(table.frame, text_column)
    conversations = _conversations(table, layout, read, labelled=False, where_prefix=table.name)
    return Conversations.of(_filled(conversations, fill, table.name, []), labelled=False)


# --- encoding ---------------------------------------------------------------------------------------------------
class GenerateEncoder(Encoder):
    """Conversations to token rows holding `targets` (the token itself where the loss counts it, else IGNORED),
    `prompt_end` (where the first answer starts) and the question, for the evaluation's samples."""

    def __init__(self, tokenizer, max_length: int, model, train_on_prompts: bool = False):
        super().__init__(tokenizer, max_length, model)
        self.keys = ["input_ids", "attention_mask"]
        self.train_on_prompts = train_on_prompts
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.stop_ids = stop_token_ids(tokenizer, self.templated)
        if not self.templated:
            self.notes = (("this model has no chat template: conversations are written in a plain '### Instruction:' "
                           "/ '### Response:' format, which users of the merged model must write too"),)

    def _render(self, turns: Sequence[Turn], open_answer: bool) -> list[tuple[str, bool]]:
        """The conversation as (text, learnt) pieces; `open_answer` ends it with the assistant's turn opened."""
        eos = self.tokenizer.eos_token or ""
        if turns[0][0] == TEXT_ROLE:
            return [(turns[0][1] + eos, True)]
        if not self.templated:
            pieces = [(_PLAIN[role].format(content, eos=eos), role == "assistant") for role, content in turns]
            return pieces
        messages = [{"role": role, "content": content} for role, content in turns]
        pieces, done = [], ""
        for index, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            prompt = self._template(messages[:index], True)
            full = self._template(messages[:index + 1], False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ModelError("This model's chat template does not render a conversation turn by turn (an earlier "
                                 "turn changes when a later one is added), so the answers cannot be told apart; set "
                                 "train_on_prompts to learn every token.")
            pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
            done = full
        if open_answer or turns[-1][0] != "assistant":
            rest = self._template(messages, True)
            pieces.append((rest[len(done):], False))
        return pieces

    def _template(self, messages: list[dict], open_answer: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_answer)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode(self, examples: Conversations) -> tuple[list[dict], int]:
        """The rows (answers' tokens as targets), and how many conversations the maximum length cut."""
        rows, cut = [], 0
        for turns in examples.conversations:
            ids: list[int] = []
            targets: list[int] = []
            for text, learnt in self._render(turns, open_answer=not examples.labels):
                piece = self._ids(text)
                ids += piece
                targets += piece if learnt or self.train_on_prompts else [IGNORED] * len(piece)
            if len(ids) > self.max_length:
                cut += 1
                ids, targets = ids[:self.max_length], targets[:self.max_length]
            learnt_at = next((i for i, target in enumerate(targets) if target != IGNORED and i > 0), len(ids))
            rows.append({"input_ids": array("i", ids), "attention_mask": array("i", [1] * len(ids)),
                         "targets": array("i", targets), "prompt_end": learnt_at, "question": question(turns)})
        return rows, cut

    def prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """The tokens a model answers `turns` from: the conversation with the assistant's turn opened, its last
        `max_length` tokens."""
        return self.whole_prompt_ids(turns)[-self.max_length:]

    def whole_prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """`prompt_ids` before the maximum length cuts them (a server refuses a prompt its model cannot take)."""
        return [token for text, _ in self._render(turns, open_answer=True) for token in self._ids(text)]

    @staticmethod
    def collate_labels(rows: Sequence[dict], labels: Sequence) -> torch.Tensor:
        width = max(len(row["input_ids"]) for row in rows)
        tensor = np.full((len(rows), width), IGNORED, dtype=np.int64)
        for index, row in enumerate(rows):
            tensor[index, :len(row["targets"])] = row["targets"]
        return torch.from_numpy(tensor)


def stop_token_ids(tokenizer, templated: bool) -> frozenset[int]:
    """The end-of-text token, and the token that ends an assistant's turn in the chat template (found by rendering
    one: the first token after its content)."""
    stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if templated:
        marker = "JRFT_ANSWER"
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        tail = text[text.rindex(marker) + len(marker):]
        ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail.strip() else []
        stops.update(ids[:1])
    return frozenset(stops)


# --- generation -------------------------------------------------------------------------------------------------
def next_token(logits: torch.Tensor, options: Decoding, generator: torch.Generator) -> int:
    """The next token from one row's logits: the likeliest, or sampled with `generator` (seeded by
    `options.seed`)."""
    if options.temperature <= 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits.float() / options.temperature, dim=-1)
    if options.top_p < 1:
        ordered, indices = probabilities.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < options.top_p  # the smallest set whose mass reaches top_p
        probabilities = torch.zeros_like(probabilities).scatter(0, indices[keep], ordered[keep])
    return int(torch.multinomial(probabilities.cpu(), 1, generator=generator))


@torch.no_grad()
def generate_ids(model: nn.Module, prompt_ids: Sequence[int], stop_ids: frozenset[int], options: Decoding,
                 device: torch.device, on_token: Callable[[list[int]], None] | None = None) -> list[int]:
    """The answer's tokens, one forward pass per token over the key-value cache; `on_token(answer so far)` after
    each. Prompt tokens (WARP / JR-WARP) go in once, where the family puts them, as in training."""
    model.eval()
    embed = model.base().get_input_embeddings()
    inputs = model.with_prompts(embed(torch.tensor([list(prompt_ids)], device=device)))
    mask = torch.ones(1, inputs.shape[1], dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(options.seed)
    from transformers import DynamicCache

    cache, answer = DynamicCache(config=model.base().config), []  # filled in place by every forward pass
    try:
        for _ in range(options.max_new_tokens):
            output = model.backbone(inputs_embeds=inputs, attention_mask=mask, cache=cache, use_cache=True)
            model.prompts_cached = model.adaptation.prompts is not None
            token = next_token(model.head(output.last_hidden_state[0, -1]), options, generator)
            if token in stop_ids:
                break
            answer.append(token)
            if on_token is not None:
                on_token(answer)
            inputs = embed(torch.tensor([[token]], device=device))
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
    finally:
        model.prompts_cached = False
    return answer


class TextStream:
    """An answer's text as its tokens arrive: each new token gives the text it adds (decoding the whole answer, since
    a token's text can depend on the ones before it)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.shown = ""

    def added(self, ids: Sequence[int], final: bool = False) -> str:
        """The text `ids` (the answer so far) add to what was shown; nothing while the last character is half of
        a multi-byte one, unless this is the `final` text."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if (text.endswith("\ufffd") and not final) or len(text) <= len(self.shown):
            return ""
        added, self.shown = text[len(self.shown):], text
        return added


def answer(model: nn.Module, encoder: GenerateEncoder, turns: Sequence[Turn], options: Decoding,
           device: torch.device, on_text: Callable[[str], None] | None = None) -> str:
    """The model's answer to a conversation; `on_text(new text)` as it grows (for streaming)."""
    stream = TextStream(encoder.tokenizer)

    def show(ids: list[int]) -> None:
        added = stream.added(ids)
        if added:
            on_text(added)

    ids = generate_ids(model, encoder.prompt_ids(turns), encoder.stop_ids, options, device,
                       show if on_text is not None else None)
    rest = stream.added(ids, final=True)
    if rest and on_text is not None:
        on_text(rest)
    return stream.tokenizer.decode(ids, skip_special_tokens=True)


# --- scoring ----------------------------------------------------------------------------------------------------
def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood, tokens counted, tokens guessed right) of next-token prediction."""
    predicted, wanted = logits[:, :-1].float(), targets[:, 1:]
    counted = wanted != IGNORED
    nll = nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), wanted.reshape(-1),
                                      ignore_index=IGNORED, reduction="sum")
    right = ((predicted.argmax(-1) == wanted) & counted).sum()
    return nll, counted.sum(), right


@torch.no_grad()
def token_scores(model: nn.Module, encoder: GenerateEncoder, rows: Sequence[dict], device: torch.device,
                 precision: str, batch_size: int = 16) -> tuple[float, int, int]:
    """(summed negative log-likelihood, tokens, tokens guessed right) over the rows' answers, batches by length."""
    from ..train import precision as precisions

    model.eval()
    autocast = precisions.autocast(precision, device)
    order = sorted(range(len(rows)), key=lambda index: len(rows[index]["input_ids"]))
    nll, tokens, right = 0.0, 0, 0
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        inputs = {key: value.to(device) for key, value in encoder.collate(batch).items()}
        with autocast or contextlib.nullcontext():
            logits = model(**inputs)
        summed, counted, correct = token_losses(logits, encoder.collate_labels(batch, ()).to(device))
        nll, tokens, right = nll + float(summed), tokens + int(counted), right + int(correct)
    return nll, tokens, right


def samples(model: nn.Module, encoder: GenerateEncoder, rows: Sequence[dict], device: torch.device) -> list[dict]:
    """The first validation prompts answered greedily, beside the answers they were given."""
    found = []
    options = Decoding(max_new_tokens=SAMPLE_TOKENS)
    for row in rows[:SAMPLE_PROMPTS]:
        end = row["prompt_end"]
        targets = [token for token in row["targets"][end:] if token != IGNORED]
        ids = generate_ids(model, list(row["input_ids"][:end]), encoder.stop_ids, options, device)
        found.append({"prompt": row["question"], "expected": encoder.tokenizer.decode(targets,
                                                                                     skip_special_tokens=True),
                      "generated": encoder.tokenizer.decode(ids, skip_special_tokens=True)})
    return found


# --- the task ---------------------------------------------------------------------------------------------------
class GenerateDataView(DataView):
    summary = "Generate text: instruction tuning or continued pretraining of a decoder (causal language model)."
    column_roles = ("Instruction / messages / text", "Input (optional)", "Output")

    def guess_columns(self, frame):
        columns = data_layout(frame)[1]
        return columns["text"], columns.get("text_pair"), columns.get("label")

    def describe(self, data):
        kinds = {"alpaca": "instructions and answers", "messages": "chat conversations",
                 "sharegpt": "chat conversations (ShareGPT form)", "text": "plain-text documents"}
        return f"Generation: learn from {kinds[data.layout]}"

    def short_description(self, data):
        return "generation"

    def placeholders(self, source: str) -> list[str]:
        return find_placeholders(source)


class Generate(Task):
    name = "generate"
    stock_class = "AutoModelForCausalLM"
    backbone_class = "AutoModelForCausalLM"
    trains_head = False
    pools = False
    generates = True
    data_view = GenerateDataView()

    def recognises(self, frame):
        return recognises_frame(frame)

    def load_data(self, spec, seed):
        return load_generate_data(spec, seed)

    def load_examples(self, source, metadata, with_labels=True):
        return load_recorded(source, metadata, with_labels)

    def examples_from_texts(self, texts, pairs=None):
        return Conversations.of([(("user", text),) for text in texts], labelled=False)

    def columns(self, data):
        return data.columns_read

    def head_for(self, loaded, outputs, bias):
        if not loaded.family.causal or loaded.output_head is None:
            raise ModelError(f"Generation needs a decoder (a causal language model such as "
                             f"bundled:SmolLM2-135M-Instruct, GPT-2, Llama, Qwen2 or Mistral); "
                             f"{loaded.info.model_id} is a {loaded.info.family} encoder.")
        for parameter in loaded.output_head.parameters():
            parameter.requires_grad_(False)  # the model's own vocabulary projection stays as it is
        return loaded.output_head

    def make_encoder(self, tokenizer, max_length, model, data=None):
        return GenerateEncoder(tokenizer, max_length, model, data.train_on_prompts if data is not None else False)

    @staticmethod
    def encode(encoder, examples):
        return encoder.encode(examples)


    def outputs_per_token(self, model):
        return model.head.out_features  # the vocabulary: a decoder's largest activations in training

    def truncation_note(self, train, validation, max_length):
        return (f"{train} training and {validation} validation conversations were longer than {max_length} tokens and "
                "were cut from the right (what was cut, often the end of an answer, is not learnt); raise the "
                "maximum length to keep them")

    def read_out(self, model, hidden, attention_mask, input_ids):
        return model.head(hidden)

    def loss_function(self, problem):
        def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            summed, counted, _ = token_losses(outputs, labels)
            return summed / counted.clamp(min=1)

        return loss

    def score_rows(self, model, encoder, rows, device, processes, precision):
        nll, tokens, right = token_scores(model, encoder, processes.share(rows), device, precision)
        nll, tokens, right = processes.sum([nll, tokens, right])
        loss = nll / tokens if tokens else math.nan
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if tokens else math.nan,
                "token_accuracy": right / tokens if tokens else math.nan,
                "samples": samples(model, encoder, rows, device) if processes.writer else []}

    def metrics(self, problem, labels, outputs, label_names):
        raise NotImplementedError("generate scores rows through score_rows()")

    def default_metric(self, problem):
        return "loss"

    def lower_is_better(self, metric):
        return metric in ("loss", "perplexity")

    def predict_records(self, predictor, examples, options=None, on_text=None):
        options = options or Decoding()
        return [{"generated": answer(predictor.model, predictor.encoder, turns, options, predictor.device, on_text)}
                for turns in examples.conversations]

    def prediction_records(self, outputs, label_names, examples=None):
        raise NotImplementedError("generate answers through predict_records()")

    def check_stock_compatible(self, model):
        """A decoder with the method folded in is the stock causal language model, its head the model's own."""

    def stock_config(self, config, label_names):
        return config


register(Generate())
