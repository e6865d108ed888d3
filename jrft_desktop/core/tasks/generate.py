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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..audit.canaries import SECRET_BITS, random_secret, vocabulary
from ..config import REPETITION_WINDOW, DataSpec, Decoding
from ..data import Table, cell_text, is_missing, open_table, require_rows
from ..errors import DataError, ModelError
from .base import DataView, Task
from .common import Encoder, open_training_data, privacy_units, split_and_sample
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
    units: tuple[str, ...] = ()  # whom each conversation belongs to (DataSpec.privacy_unit), when read

    def __len__(self) -> int:
        return len(self.conversations)

    def take(self, count: int) -> Conversations:
        return self.select(range(min(count, len(self))))

    def select(self, rows: Sequence[int]) -> Conversations:
        picked = tuple(self.conversations[i] for i in rows)
        return Conversations(picked, picked if self.labels else (),
                             tuple(self.units[i] for i in rows) if self.units else ())

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
    if spec.privacy_unit:  # every row is a conversation
        train = replace(train, units=privacy_units(table, spec.privacy_unit))
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
        # a base model's own start token, which a chat template writes itself (Gemma 3 270M computes badly without it)
        self.bos = "" if self.templated or tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id] else \
            tokenizer.bos_token
        self.stop_ids = stop_token_ids(tokenizer, self.templated)
        if not self.templated:
            self.notes = (("this model has no chat template: conversations are written in a plain '### Instruction:' "
                           "/ '### Response:' format, which users of the merged model must write too"),)

    def _render(self, turns: Sequence[Turn], open_answer: bool) -> list[tuple[str, bool]]:
        """The conversation as (text, learnt) pieces; `open_answer` ends it with the assistant's turn opened."""
        eos = self.tokenizer.eos_token or ""
        if turns[0][0] == TEXT_ROLE:
            return [(self.bos, False), (turns[0][1] + eos, True)]
        if not self.templated:
            return [(self.bos, False)] + [(_PLAIN[role].format(content, eos=eos), role == "assistant")
                                          for role, content in turns]
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
def penalize_repeats(logits: torch.Tensor, previous: Sequence[int], penalty: float) -> torch.Tensor:
    """The logits with each token among the last REPETITION_WINDOW of `previous` made less likely: a positive logit
    divided by `penalty`, a negative one multiplied (the CTRL paper's rule, as transformers and llama.cpp apply it)."""
    seen = torch.tensor(sorted(set(previous[-REPETITION_WINDOW:])), dtype=torch.long, device=logits.device)
    if penalty == 1 or not len(seen):
        return logits
    chosen = logits[seen]
    return logits.index_put((seen,), torch.where(chosen > 0, chosen / penalty, chosen * penalty))


def next_token(logits: torch.Tensor, options: Decoding, generator: torch.Generator,
               previous: Sequence[int] = ()) -> int:
    """The next token from one row's logits, after the answer's `previous` tokens (for the repetition penalty): the
    likeliest, or sampled with `generator` (seeded by `options.seed`)."""
    logits = penalize_repeats(logits, previous, options.repetition_penalty)
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
    # a base held in half precision computes under its autocast (precision.py), as the run that trained it did
    half = model.head.weight.dtype if model.head.weight.dtype in (torch.bfloat16, torch.float16) else None
    try:
        with torch.autocast(device.type, dtype=half) if half else contextlib.nullcontext():
            for _ in range(options.max_new_tokens):
                output = model.backbone(inputs_embeds=inputs, attention_mask=mask, cache=cache, use_cache=True)
                model.prompts_cached = model.adaptation.prompts is not None
                token = next_token(model.head(output.last_hidden_state[0, -1]), options, generator, answer)
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
# The language-model loss never makes the logits of every position: the output layer runs only at the positions
# the loss counts (the answers' tokens unless train_on_prompts), a chunk of rows at a time, each chunk's
# cross-entropy in fp32, and its gradient taken in the same pass (the technique of Liger's fused linear
# cross-entropy): what is kept for the backward pass is the gradient for the chunk's hidden states, [rows, hidden],
# not [rows, vocabulary]. Its sums equal those of the whole logits' cross-entropy (`token_losses`) within 1e-5
# relative in fp32 (tests/core/test_chunked_loss.py).
CHUNK_VALUES = 2 ** 24  # logits of one chunk (rows x vocabulary): 64 MB in fp32


def chunk_rows(vocabulary: int) -> int:
    """How many positions one chunk of the loss computes the logits of."""
    return max(1, CHUNK_VALUES // max(1, vocabulary))


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """What the output layer's product computes in: the autocast's dtype where one is on (as the whole
    logits were computed before), else the weight's."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def _chunk_sums(hidden: torch.Tensor, wanted: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dtype: torch.dtype, gradients: tuple[bool, bool, bool]):
    """(summed NLL, right, gradient of the summed NLL for hidden, weight, bias, each None where not wanted)."""
    rows = chunk_rows(weight.shape[0])
    product_weight = weight.to(dtype)
    product_bias = bias.to(dtype) if bias is not None else None
    nll = hidden.new_zeros((), dtype=torch.float32)
    right = torch.zeros((), dtype=torch.long, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if gradients[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if gradients[1] else None
    grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if gradients[2] else None
    for start in range(0, hidden.shape[0], rows):
        states, targets = hidden[start:start + rows].to(dtype), wanted[start:start + rows]
        logits = nn.functional.linear(states, product_weight, product_bias).float()
        top = logits.logsumexp(-1)
        nll += (top - logits.gather(1, targets[:, None])[:, 0]).sum()
        right += (logits.argmax(-1) == targets).sum()
        if not any(gradients):
            continue
        logits.sub_(top[:, None]).exp_()  # the softmax, in place
        logits[torch.arange(len(targets), device=logits.device), targets] -= 1  # d(NLL) / d(logits)
        if gradients[2]:
            grad_bias += logits.sum(0)
        logits = logits.to(dtype)
        if gradients[0]:
            grad_hidden[start:start + rows] = (logits @ product_weight).to(hidden.dtype)
        if gradients[1]:
            grad_weight += (logits.T @ states).float()
    return nll, right, grad_hidden, grad_weight, grad_bias


class _ChunkedNLL(torch.autograd.Function):
    """The summed NLL (and the right guesses, no gradient) of the output layer at the counted positions, its gradient
    computed in the forward pass chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, wanted, dtype):
        wanted_grads = (hidden.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        with torch.autocast(hidden.device.type, enabled=False):
            nll, right, *grads = _chunk_sums(hidden.detach(), wanted, weight.detach(),
                                             bias.detach() if bias is not None else None, dtype, wanted_grads)
        ctx.grads = grads
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(right)
        return nll, right

    @staticmethod
    def backward(ctx, grad_nll, _grad_right):
        grads = [(grad * grad_nll.to(grad.dtype)).to(dtype) if grad is not None else None
                 for grad, dtype in zip(ctx.grads, ctx.dtypes)]
        ctx.grads = None
        return grads[0], grads[1], grads[2], None, None


def chunked_sums(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[summed NLL, tokens counted, tokens guessed right] of next-token prediction, from the last hidden states
    ([B, T, H]) and the targets ([B, T], IGNORED where the loss does not count): the output layer only at the counted
    positions, in chunks (`_ChunkedNLL`)."""
    wanted = targets[:, 1:]
    counted = wanted != IGNORED
    states, picked = hidden[:, :-1][counted], wanted[counted]
    count = counted.sum().to(torch.float32)
    if isinstance(head, nn.Linear):
        nll, right = _ChunkedNLL.apply(states, head.weight, head.bias, picked,
                                       _compute_dtype(hidden.device, head.weight))
    else:  # another output layer (a wrapped one): by chunks, each through autograd as usual
        nll, right = hidden.new_zeros((), dtype=torch.float32), torch.zeros((), dtype=torch.long, device=hidden.device)
        weight = getattr(head, "weight", None)
        rows = chunk_rows(int(getattr(head, "out_features", 0) or (weight.shape[0] if weight is not None else 0)
                              or 2 ** 18))  # an unknown width: as for a 262,144-token vocabulary
        for start in range(0, len(picked), rows):
            logits = head(states[start:start + rows]).float()
            chunk = picked[start:start + rows]
            nll = nll + nn.functional.cross_entropy(logits, chunk, reduction="sum")
            right = right + (logits.argmax(-1) == chunk).sum()
    return torch.stack([nll, count, right.to(torch.float32)])


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood, tokens counted, tokens guessed right) of next-token prediction from whole
    logits ([B, T, V]; what private training's per-example passes give), or from `chunked_sums`' sums ([3])."""
    if logits.dim() == 1:
        return logits[0], logits[1], logits[2]
    predicted, wanted = logits[:, :-1].float(), targets[:, 1:]
    counted = wanted != IGNORED
    nll = nn.functional.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), wanted.reshape(-1),
                                      ignore_index=IGNORED, reduction="sum")
    right = ((predicted.argmax(-1) == wanted) & counted).sum()
    return nll, counted.sum(), right


@torch.no_grad()
def token_scores(model: nn.Module, encoder: GenerateEncoder, rows: Sequence[dict], device: torch.device,
                 precision: str, batch_size: int = 16) -> tuple[float, int, int]:
    """(summed negative log-likelihood, tokens, tokens guessed right) over the rows' answers, batches by length; the
    output layer only at the answers' tokens (`chunked_sums`)."""
    from ..train import precision as precisions

    model.eval()
    autocast = precisions.autocast(precision, device)
    order = sorted(range(len(rows)), key=lambda index: len(rows[index]["input_ids"]))
    nll, tokens, right = 0.0, 0, 0
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        inputs = {key: value.to(device) for key, value in encoder.collate(batch).items()}
        with autocast or contextlib.nullcontext():
            sums = model(**inputs, targets=encoder.collate_labels(batch, ()).to(device))
        summed, counted, correct = (float(value) for value in sums)
        nll, tokens, right = nll + summed, tokens + int(counted), right + int(correct)
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


# --- canaries for the privacy audit -------------------------------------------------------------------------------
CANARY_SECRET = re.compile(r"\d(?: \d)+")  # audit.canaries.random_secret's digits


def canary_turns(name: str, secret: str, layout: str) -> tuple[Turn, ...]:
    """One canary: the secret in a fixed template, as the data's layout holds examples (the answer, or the whole
    document, is learnt)."""
    statement = f"The secret number of {name} is {secret}."
    if layout == "text":
        return ((TEXT_ROLE, statement),)
    return (("user", f"What is the secret number of {name}?"), ("assistant", statement))


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

    def make_canaries(self, data, count, rng):
        """A random secret in a fixed template, for a name made of two of the data's words: asked and answered in
        instruction and chat data, stated in plain text."""
        words = vocabulary(data.train.texts)
        names = ("-".join(pair) for pair in (rng.choice(words, size=2) for _ in range(count)))
        return Conversations.of([canary_turns(name, random_secret(rng), data.layout) for name in names],
                                labelled=True)

    def canary_candidates(self, canaries, index, count, rng):
        turns = canaries.conversations[index]
        secret = CANARY_SECRET.search(turns[-1][1]).group()
        candidates = []
        for _ in range(count):
            other = random_secret(rng)
            candidates.append(tuple((role, content.replace(secret, other)) for role, content in turns))
        return Conversations.of(candidates, labelled=True), SECRET_BITS

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
        return model.head.out_features  # the vocabulary, whose loss holds one chunk of positions at a time

    def truncation_note(self, train, validation, max_length):
        return (f"{train} training and {validation} validation conversations were longer than {max_length} tokens and "
                "were cut from the right (what was cut, often the end of an answer, is not learnt); raise the "
                "maximum length to keep them")

    def read_out(self, model, hidden, attention_mask, input_ids):
        return model.head(hidden)

    sums_in_forward = True  # training and scoring take `loss_sums`: the vocabulary only at the counted tokens

    def loss_sums(self, model, hidden, targets):
        return chunked_sums(model.head, hidden, targets)

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

    def default_metric(self, data):
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
