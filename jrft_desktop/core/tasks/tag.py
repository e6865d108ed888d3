"""Token classification (named-entity recognition): one BIO or IOBES tag per word.

Data: a CoNLL file (data.py reads it into a `tokens` and a `tags` column of lists), or a JSON, JSON Lines or
Parquet file or a `datasets` set with a token-list column and a tag-list column: string tags, or integer ids named
by a `datasets` ClassLabel feature or by a sidecar list, `tags.txt` (or `<data file stem>.tags.txt`) beside the
data, one name per line in id order. A sentence is encoded as the text its words make (joined by spaces; a typed
text as it is, its words the runs of letters and digits and each other character that is not a space), tokenised
with the tokenizer's offset mapping; the first sub-token of each word carries its tag, the others (and the special
tokens) are left out of the loss. The head is a linear layer on every token's last hidden state. Metrics are
entity-level, as seqeval computes them (precision, recall and F1, micro and per type), plus token accuracy; a
word cut off by the maximum length counts as tagged O. Predictions are entities with their character offsets. A
merged model is the family's stock `AutoModelForTokenClassification`."""

from __future__ import annotations

import bisect
import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..audit.canaries import random_sentences, vocabulary
from ..config import DataSpec
from ..data import TAGS_COLUMN, TOKENS_COLUMN, Table, is_missing, open_table, require_column, require_rows
from ..errors import DataError
from ..metrics import softmax
from .base import DataView
from .common import ENCODE_CHUNK, Encoder, LinearHeadTask, open_training_data, privacy_units, split_and_sample
from .registry import register

TAGGING = "tagging"  # the problem a tag run records (vector metadata `task`)
IGNORED = -100  # the label of sub-tokens the loss leaves out (cross-entropy's ignore_index)
OUTSIDE = "O"
SIDECAR = "tags.txt"
_TAG = re.compile(r"[BIESLU][-_]\S+|O")  # O, or a BIO / IOBES (BILOU) prefix and an entity type
_WORD = re.compile(r"[^\W_]+|\S")  # the words of a typed text: letters and digits, or one other character
_TOKEN_NAMES = ("tokens", "words", "token", "word", "sentence", "text")
_TAG_NAMES = ("ner_tags", "tags", "ner", "labels", "label", "tag")


# --- examples ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagExamples:
    """Sentences as texts, the character span of each word in its text, and each word's tag id (empty: unlabelled)."""

    texts: tuple[str, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]
    labels: tuple[tuple[int, ...], ...] = ()
    units: tuple[str, ...] = ()  # whom each sentence belongs to (DataSpec.privacy_unit), when read

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, count: int) -> TagExamples:
        return TagExamples(self.texts[:count], self.spans[:count], self.labels[:count], self.units[:count])

    def select(self, rows: Sequence[int]) -> TagExamples:
        return TagExamples(tuple(self.texts[i] for i in rows), tuple(self.spans[i] for i in rows),
                           tuple(self.labels[i] for i in rows) if self.labels else (),
                           tuple(self.units[i] for i in rows) if self.units else ())

    def words(self, index: int) -> list[str]:
        return [self.texts[index][start:end] for start, end in self.spans[index]]

    @classmethod
    def from_words(cls, sentences: Sequence[Sequence[str]], labels: Sequence[Sequence[int]] = ()) -> TagExamples:
        texts, spans = [], []
        for words in sentences:
            starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
            texts.append(" ".join(words))
            spans.append(tuple((int(start), int(start) + len(word)) for start, word in zip(starts, words)))
        return cls(tuple(texts), tuple(spans), tuple(tuple(tags) for tags in labels))

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> TagExamples:
        return cls(tuple(texts), tuple(tuple(match.span() for match in _WORD.finditer(text)) for text in texts))


@dataclass(frozen=True)
class TagData:
    """Training and validation sentences plus what is needed to read other files the same way."""

    train: TagExamples
    validation: TagExamples
    tokens_column: str
    tags_column: str
    label_names: tuple[str, ...]
    validation_source: str
    notes: tuple[str, ...]
    problem: str = TAGGING

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# --- columns and tags -------------------------------------------------------------------------------------------
def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _list_columns(frame: pd.DataFrame) -> list:
    """The columns whose every filled cell holds a list (a sentence's tokens or tags)."""
    found = []
    for column in frame.columns:
        filled = [value for value in frame[column].head(50).tolist() if _is_list(value) or not is_missing(value)]
        if filled and all(_is_list(value) for value in filled):
            found.append(column)
    return found


def guess_tag_columns(frame: pd.DataFrame) -> tuple[str, None, str]:
    """(token column, None, tag column): by name (list-valued columns first), else the first list-valued column
    holding strings for the tokens and another for the tags. A named column that holds no lists is still taken, so
    that reading it says what is wrong with it."""
    lists = _list_columns(frame)
    by_name: dict[str, Any] = {}
    for column in (*lists, *frame.columns):
        by_name.setdefault(str(column).strip().lower(), column)
    tokens = next((by_name[name] for name in _TOKEN_NAMES if name in by_name), None)
    if tokens is None:
        textual = [c for c in lists if all(isinstance(v, str) for row in frame[c].head(20) for v in list(row))]
        tokens = next(iter(textual or lists), None)
    tags = next((by_name[name] for name in _TAG_NAMES if name in by_name and by_name[name] != tokens), None)
    tags = tags if tags is not None else next((column for column in lists if column != tokens), None)
    if tokens is None or tags is None:
        found = ", ".join(map(str, lists)) or "none"
        raise DataError(f"A tag task needs a token-list column and a tag-list column (or a CoNLL file); columns "
                        f"holding lists: {found}.")
    return tokens, None, tags


def _resolve_columns(spec: DataSpec, table: Table, notes: list[str]) -> tuple[str, str]:
    frame = table.frame
    if spec.text_pair_column:
        raise DataError("A tag task reads a token column and a tag column, not a text pair; leave the text pair "
                        "column empty.")
    if list(frame.columns) == [TOKENS_COLUMN]:
        raise DataError(f"{table.name} has one column (the tokens) but no tags; a CoNLL file for training has "
                        "token<TAB>tag on every line.")
    for column in (spec.text_column, spec.label_column):
        if column:
            require_column(frame, column, table.name)
    guessed = None if spec.text_column and spec.label_column else guess_tag_columns(frame)
    tokens = spec.text_column or guessed[0]
    tags = spec.label_column or guessed[2]
    if tokens == tags:
        raise DataError(f"The token and tag columns must differ (both '{tokens}').")
    if guessed is not None and list(frame.columns) != [TOKENS_COLUMN, TAGS_COLUMN]:
        notes.append(f"Guessed columns: tokens '{tokens}', tags '{tags}' (set text_column / label_column to "
                     "choose others).")
    return tokens, tags


def _id_names(table: Table, column: str, source: str) -> tuple[str, ...] | None:
    """Names of integer tag ids: the `datasets` ClassLabel's, else a sidecar list beside the data file."""
    if column in table.class_names:
        return table.class_names[column]
    path = Path(source).expanduser()
    if not path.exists():  # a `datasets` Hub name: its ClassLabel names or none
        return None
    folder = path if path.is_dir() else path.parent
    for sidecar in (folder / f"{path.stem}.tags.txt", folder / SIDECAR):
        if sidecar.is_file():
            return tuple(line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip())
    return None


def _sentences(table: Table, tokens: str, tags: str | None, source: str,
               notes: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Every row's tokens and tag names (empty lists when `tags` is None), checked row by row. A token tagged by
    several annotators (`B-creative-work,B-person`, as in WNUT-17's test set) keeps the first tag, with a note."""
    names = _id_names(table, tags, source) if tags is not None else None
    several = 0
    words, tag_names = [], []
    for number, row in enumerate(table.frame[[c for c in (tokens, tags) if c is not None]].itertuples(index=False),
                                 start=1):
        where = f"Row {number} of {table.name}"
        if not _is_list(row[0]):
            raise DataError(f"Column '{tokens}' of {table.name} holds {_kind(row[0])}, not a list of tokens per "
                            "sentence; a tag task needs a token-list column and a tag-list column (or a CoNLL file).")
        sentence = [str(token) for token in row[0]]
        if not sentence:
            raise DataError(f"{where} is an empty sentence (no tokens); remove it.")
        blank = next((index for index, token in enumerate(sentence) if not token.strip()), None)
        if blank is not None:
            raise DataError(f"{where} has an empty token (token {blank + 1}); every token needs a character.")
        words.append(sentence)
        if tags is None:
            continue
        if not _is_list(row[1]):
            raise DataError(f"Column '{tags}' of {table.name} holds {_kind(row[1])}, not a list of tags per token; "
                            "a tag task needs a tag-list column beside the token-list column (or a CoNLL file).")
        if len(row[1]) != len(sentence):
            raise DataError(f"{where} has {len(sentence)} tokens but {len(row[1])} tags; each token needs one tag.")
        sentence_tags = [_tag_name(tag, names, where, tags) for tag in row[1]]
        several += sum("," in tag for tag in sentence_tags)
        tag_names.append([tag.split(",")[0].strip() if "," in tag else tag for tag in sentence_tags])
    if several:
        notes.append(f"{several} token(s) of {table.name} carry several tags separated by commas (e.g. several "
                     "annotators' answers); each keeps the first.")
    return words, tag_names


def _kind(value: Any) -> str:
    return f"text ('{str(value)[:40]}')" if isinstance(value, str) else f"a {type(value).__name__}"


def _tag_name(tag: Any, names: tuple[str, ...] | None, where: str, column: str) -> str:
    if isinstance(tag, str):
        return tag.strip()
    if isinstance(tag, (int, np.integer)) and not isinstance(tag, (bool, np.bool_)):
        if names is None:
            raise DataError(f"Column '{column}' holds integer tags without names; put the names in {SIDECAR} beside "
                            "the data (one per line, in id order), or use string tags.")
        if not 0 <= tag < len(names):
            raise DataError(f"{where} has tag id {tag}, but only {len(names)} tag names are known.")
        return names[tag]
    raise DataError(f"{where} has a tag that is neither text nor an integer ({tag!r}).")


def tag_set(tags: list[list[str]], name: str) -> tuple[str, ...]:
    """The tag names, O first, then by entity type and prefix; each must be a BIO or IOBES tag."""
    found = {tag for sentence in tags for tag in sentence}
    wrong = sorted(tag for tag in found if not _TAG.fullmatch(tag))
    if wrong:
        raise DataError(f"Tag(s) {', '.join(repr(tag) for tag in wrong[:5])} in {name} are not BIO or IOBES tags; "
                        "a tag is O, or B-, I-, E- or S- and an entity type (e.g. B-person).")
    if len(found - {OUTSIDE}) == 0:
        raise DataError(f"Every tag in {name} is O; there is no entity to learn.")
    return tuple(sorted(found, key=lambda tag: (tag != OUTSIDE, tag[2:], "BIELSU".find(tag[0]))))


def encode_tags(tags: list[list[str]], label_names: Sequence[str], name: str) -> tuple[tuple[int, ...], ...]:
    index = {tag: position for position, tag in enumerate(label_names)}
    unseen = sorted({tag for sentence in tags for tag in sentence if tag not in index})
    if unseen:
        shown = ", ".join(f"'{tag}'" for tag in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
        raise DataError(f"Tag(s) {shown} in {name} did not occur in the training data; known tags: "
                        f"{', '.join(label_names)}.")
    return tuple(tuple(index[tag] for tag in sentence) for sentence in tags)


def load_tag_data(spec: DataSpec, seed: int) -> TagData:
    """Training and validation sentences for `spec`; the split and the sampling are deterministic per seed."""
    table, held_out, notes = open_training_data(spec, seed)
    tokens, tags = _resolve_columns(spec, table, notes)
    words, names = _sentences(table, tokens, tags, spec.train, notes)
    label_names = tag_set(names, table.name)
    train = TagExamples.from_words(words, encode_tags(names, label_names, table.name))
    if spec.privacy_unit:  # every row is a sentence
        train = replace(train, units=privacy_units(table, spec.privacy_unit))
    rng = np.random.default_rng(seed)
    if held_out is not None:
        for column in (tokens, tags):
            require_column(held_out.frame, column, held_out.name)
        val_words, val_names = _sentences(held_out, tokens, tags, spec.validation or spec.train, notes)
        validation = TagExamples.from_words(val_words, encode_tags(val_names, label_names, held_out.name))
        validation_source = held_out.origin
    else:
        validation, validation_source = None, ""
    train, validation, validation_source = split_and_sample(train, validation, validation_source, spec, seed, rng,
                                                            notes, table.name, "sentence")
    return TagData(train, validation, tokens, tags, label_names, validation_source, tuple(notes))


def load_tag_examples(source: str, tokens: str, tags: str | None, label_names: Sequence[str]) -> TagExamples:
    """Every sentence of another file, in file order, with the columns and tag names of a trained run; without
    tags when `tags` is None or the file has no such column."""
    table = open_table(source)
    require_rows(table)
    require_column(table.frame, tokens, table.name)
    tags = tags if tags is not None and tags in table.frame.columns else None
    words, names = _sentences(table, tokens, tags, source, [])
    return TagExamples.from_words(words, encode_tags(names, label_names, table.name) if tags is not None else ())


# --- encoding ---------------------------------------------------------------------------------------------------
def first_tokens(text: str, offsets: Sequence[tuple[int, int]], special: Sequence[int],
                 spans: Sequence[tuple[int, int]]) -> list[int]:
    """The position of each word's first sub-token (-1: the word has none, e.g. cut off by the maximum length): a
    token belongs to the first word its character span overlaps, leading spaces left out (byte-level BPEs count
    the space before a word into its first token); a span left empty (a lone space token before a word it could not
    merge with) belongs to the word it stands in."""
    ends = [end for _, end in spans]
    starts = [-1] * len(spans)
    for position, ((start, end), is_special) in enumerate(zip(offsets, special)):
        if is_special:
            continue
        while start < end and text[start].isspace():
            start += 1
        word = bisect.bisect_right(ends, start)
        if word < len(spans) and spans[word][0] < max(end, start + 1) and starts[word] < 0:
            starts[word] = position
    return starts


class TagEncoder(Encoder):
    """Sentences to token rows that also hold `word_starts`, each word's first sub-token (or -1)."""

    def encode(self, examples: TagExamples) -> tuple[list[dict], int]:
        """The rows, and how many words the maximum length cut off."""
        rows: list[dict] = []
        cut = 0
        for start in range(0, len(examples), ENCODE_CHUNK):
            texts = list(examples.texts[start:start + ENCODE_CHUNK])
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True,
                                     return_special_tokens_mask=True)
            keys = [key for key in self.keys if key in encoded]
            for index in range(len(texts)):
                offsets, special = encoded["offset_mapping"][index], encoded["special_tokens_mask"][index]
                spans = examples.spans[start + index]
                starts = first_tokens(texts[index], offsets, special, spans)
                if len(offsets) >= self.max_length:  # truncated: the words after the last token kept were cut
                    last = max((end for (_, end), flag in zip(offsets, special) if not flag), default=0)
                    cut += sum(1 for word, position in enumerate(starts) if position < 0 and spans[word][0] >= last)
                row = {key: array("i", encoded[key][index]) for key in keys}
                row["word_starts"] = array("i", starts)
                rows.append(row)
        return rows, cut

    @staticmethod
    def collate_labels(rows: Sequence[dict], labels: Sequence[Sequence[int]]) -> torch.Tensor:
        """Each word's tag at its first sub-token, IGNORED everywhere else, padded as the inputs are."""
        width = max(len(row["input_ids"]) for row in rows)
        tensor = np.full((len(rows), width), IGNORED, dtype=np.int64)
        for index, (row, tags) in enumerate(zip(rows, labels)):
            starts = np.asarray(row["word_starts"], dtype=np.int64)
            kept = starts >= 0
            tensor[index, starts[kept]] = np.asarray(tags, dtype=np.int64)[kept]
        return torch.from_numpy(tensor)


# --- decoding and scoring ---------------------------------------------------------------------------------------
def word_tags(outputs: np.ndarray, label_names: Sequence[str]) -> list[str]:
    """Each word's predicted tag; a word the model did not see (a NaN row) is O."""
    seen = ~np.isnan(outputs).any(axis=1)
    best = np.where(seen, np.nan_to_num(outputs).argmax(axis=1), -1)
    return [label_names[int(tag)] if tag >= 0 else OUTSIDE for tag in best]


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level precision, recall and F1 (micro, and per type with its support), as seqeval computes them."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    scores = {"entity_f1": f1_score(gold, predicted, zero_division=0),
              "entity_precision": precision_score(gold, predicted, zero_division=0),
              "entity_recall": recall_score(gold, predicted, zero_division=0)}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {name: {"precision": float(row["precision"]), "recall": float(row["recall"]),
                       "f1": float(row["f1-score"]), "support": int(row["support"])}
                for name, row in report.items() if not name.endswith(" avg")}
    return {**{key: float(value) for key, value in scores.items()}, "per_type": per_type}


def tag_metrics(labels: Sequence[Sequence[int]], outputs: Sequence[np.ndarray], label_names: Sequence[str]) -> dict:
    """entity_f1 / entity_precision / entity_recall, token_accuracy and the mean loss over the words seen, then the
    per-type table (`per_type`)."""
    gold = [[label_names[tag] for tag in tags] for tags in labels]
    predicted = [word_tags(output, label_names) for output in outputs]
    correct = sum(g == p for tags, guesses in zip(gold, predicted) for g, p in zip(tags, guesses))
    total = sum(len(tags) for tags in gold)
    losses = []
    for tags, output in zip(labels, outputs):
        seen = ~np.isnan(output).any(axis=1)
        if seen.any():
            probabilities = softmax(output[seen].astype(np.float64))
            losses.append(-np.log(np.clip(probabilities[np.arange(seen.sum()), np.asarray(tags)[seen]], 1e-12, None)))
    scores = entity_scores(gold, predicted)
    per_type = scores.pop("per_type")
    loss = float(np.concatenate(losses).mean()) if losses else math.nan
    return {**scores, "token_accuracy": correct / total if total else math.nan, "loss": loss, "per_type": per_type}


def entities(text: str, spans: Sequence[tuple[int, int]], output: np.ndarray,
             label_names: Sequence[str]) -> list[dict]:
    """The entities of one sentence: its words' tags decoded as seqeval decodes them, each with its text, type,
    character offsets and score (the mean probability of its words' tags)."""
    from seqeval.metrics.sequence_labeling import get_entities

    tags = word_tags(output, label_names)
    probabilities = softmax(np.nan_to_num(output).astype(np.float64)) if len(output) else np.zeros((0, 1))
    found = []
    for kind, first, last in get_entities(tags):
        start, end = spans[first][0], spans[last][1]
        score = float(np.mean([probabilities[word].max() for word in range(first, last + 1)]))
        found.append({"text": text[start:end], "type": kind, "start": start, "end": end, "score": round(score, 6)})
    return found


# --- the task ---------------------------------------------------------------------------------------------------
def entity_types(label_names: Sequence[str]) -> list[str]:
    """The entity types the tags name (B-person and I-person: person), sorted."""
    return sorted({tag[2:] for tag in label_names if tag != OUTSIDE})


class TagDataView(DataView):
    summary = "Tag every word of a text (named-entity recognition: BIO or IOBES tags)."
    column_roles = ("Tokens", None, "Tags")

    def guess_columns(self, frame):
        return guess_tag_columns(frame)

    def describe(self, data):
        return f"{self._tagging(data)} ({', '.join(entity_types(data.label_names))})"

    def short_description(self, data):
        return self._tagging(data).lower()

    @staticmethod
    def _tagging(data) -> str:
        return f"Token tagging with {data.num_labels} tags over {len(entity_types(data.label_names))} entity types"

    def tagged_preview(self, frame):
        tokens, _, tags = guess_tag_columns(frame)
        return [[(str(word), str(tag)) for word, tag in zip(row_tokens, row_tags)]
                for row_tokens, row_tags in zip(frame[tokens], frame[tags]) if _is_list(row_tokens)
                and _is_list(row_tags)]

    def label_distribution(self, examples, label_names):
        if not examples.labels:
            return {}
        counts = np.bincount(np.concatenate([np.asarray(tags, dtype=np.int64) for tags in examples.labels]),
                             minlength=len(label_names))
        return {name: int(count) for name, count in zip(label_names, counts)}


class Tag(LinearHeadTask):  # a linear layer on every token; the tag names become the stock config's id2label
    name = "tag"
    pools = False  # a tag for every token
    stock_class = "AutoModelForTokenClassification"
    data_view = TagDataView()

    def recognises(self, frame):
        return bool(_list_columns(frame))

    def load_data(self, spec, seed):
        return load_tag_data(spec, seed)

    def load_examples(self, source, metadata, with_labels=True):
        columns = metadata["columns"]
        return load_tag_examples(source, columns["text"], columns["label"] if with_labels else None,
                                 metadata["label_names"])

    def examples_from_texts(self, texts, pairs=None):
        return TagExamples.from_texts(texts)

    def make_canaries(self, data, count, rng):
        """Random sequences of the data's words, each word with a random tag."""
        sentences = random_sentences(vocabulary(data.train.texts), count, rng)
        tags = [tuple(int(tag) for tag in rng.integers(0, len(data.label_names), size=len(words)))
                for words in sentences]
        return TagExamples.from_words(sentences, tags)

    def columns(self, data):
        return {"text": data.tokens_column, "text_pair": None, "label": data.tags_column}

    def make_encoder(self, tokenizer, max_length, model, data=None):
        return TagEncoder(tokenizer, max_length, model)

    @staticmethod
    def encode(encoder: TagEncoder, examples) -> tuple[list[dict], int]:
        return encoder.encode(examples)

    def model_notes(self, model):
        if not model.family.causal:
            return ()
        note = (f"{model.info.family} is a decoder: it tags each word seeing only the words before it (the left "
                "context), not those after it as an encoder does, so expect lower entity scores than an encoder of "
                "its size")
        return (note,)

    def truncation_note(self, train, validation, max_length):
        return (f"{train} training and {validation} validation words were cut off by the maximum length of "
                f"{max_length} tokens (they count as tagged O)")

    def row_outputs(self, outputs, rows):
        """Each row's outputs at its words' first sub-tokens: [words, tags], NaN for a word the model did not see."""
        per_row = []
        for output, row in zip(outputs, rows):
            starts = np.asarray(row["word_starts"], dtype=np.int64)
            words = np.full((len(starts), output.shape[-1]), np.nan, dtype=np.float32)
            words[starts >= 0] = output[starts[starts >= 0]]
            per_row.append(words)
        return per_row

    def join_outputs(self, outputs, width):
        return outputs

    def outputs_per_token(self, model):
        return model.head.out_features

    def read_out(self, model, hidden, attention_mask, input_ids):
        return model.head(hidden)

    def loss_function(self, problem):
        def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            flat = labels.reshape(-1)
            summed = nn.functional.cross_entropy(outputs.float().reshape(flat.shape[0], -1), flat,
                                                 ignore_index=IGNORED, reduction="sum")
            return summed / (flat != IGNORED).sum().clamp(min=1)

        return loss

    def metrics(self, problem, labels, outputs, label_names):
        return tag_metrics(labels, outputs, label_names)

    def default_metric(self, data):
        return "entity_f1"

    def prediction_records(self, outputs, label_names, examples=None):
        return [{"entities": entities(examples.texts[index], examples.spans[index], output, label_names),
                 "words": examples.words(index), "tags": word_tags(output, label_names)}
                for index, output in enumerate(outputs)]

    def api_answer(self, record):
        """The entities as transformers' token-classification pipeline gives them (aggregation 'simple')."""
        return [{"entity_group": entity["type"], "score": entity["score"], "word": entity["text"],
                 "start": entity["start"], "end": entity["end"]} for entity in record["entities"]]

    def check_stock_compatible(self, model):
        """Any trained tagger folds into the stock class (its head reads every token, as the stock head does)."""


register(Tag())
