"""Continuous batching over one key-value cache: the answers a lane is generating advance one token per step,
together; a new request's prompt is read alone (exactly as it would be served alone) and its cache joins the batch
between two steps, and a finished answer leaves it at once, so a long answer never holds up a short one.

The rows' caches differ in length, so each is padded on the left to the longest (the padding masked out, its
positions counted per row): each row computes what it computes alone, up to the rounding of batched products."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional

from ..core.tasks.generate import next_token
from .bank import Lane
from .jobs import GenerationJob


@dataclass(eq=False)
class Row:
    job: GenerationJob
    generator: torch.Generator  # the sampling's, seeded as generating alone seeds it
    position: int  # of the token it reads next (its prompt tokens and answer so far, padding not counted)
    next_input: int = -1


def _pad_keys(states: torch.Tensor, width: int) -> torch.Tensor:
    """[rows, heads, tokens, size] cached keys or values, zeros before them up to `width` tokens."""
    return functional.pad(states, (0, 0, width - states.shape[-2], 0))


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return functional.pad(mask, (width - mask.shape[-1], 0))


def _mergeable(model) -> bool:
    """Whether rows' caches can be padded and joined: every layer keeps all its tokens (a sliding window drops the
    oldest ones, padding included, so such a model decodes one answer at a time)."""
    from transformers import DynamicCache

    return not any(getattr(layer, "is_sliding", False) for layer in DynamicCache(config=model.base().config).layers)


class RunningBatch:
    """The answers one lane is generating, over one cache (`mask`: which cached tokens each row attends to)."""

    def __init__(self, lane: Lane, max_rows: int):
        self.lane = lane
        self.max_rows = max_rows if _mergeable(lane.model) else 1
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None

    @property
    def room(self) -> int:
        return self.max_rows - len(self.rows)

    @torch.no_grad()
    def join(self, job: GenerationJob) -> str | None:
        """Read the job's prompt alone and take its first token; the row joins the batch unless that already
        finished it (then its finish reason)."""
        from transformers import DynamicCache

        model = self.lane.model
        device = model.head.weight.device
        inputs = model.with_prompts(model.base().get_input_embeddings()(torch.tensor([job.prompt_ids], device=device)))
        mask = torch.ones(1, inputs.shape[1], dtype=torch.long, device=device)
        cache = DynamicCache(config=model.base().config)
        self.lane.prepare([job.vector])
        output = model.backbone(inputs_embeds=inputs, attention_mask=mask, cache=cache, use_cache=True)
        row = Row(job, torch.Generator().manual_seed(job.options.seed), inputs.shape[1])
        reason = self._take(row, model.head(output.last_hidden_state[0, -1]))
        if reason is None:
            self._merge(row, cache, mask)
        return reason

    @torch.no_grad()
    def step(self) -> list[tuple[Row, str]]:
        """One token for every row; the rows that finished (or were cancelled), with why, have left."""
        finished = [(row, "cancelled") for row in self.rows if row.job.cancelled]
        self._leave([index for index, row in enumerate(self.rows) if row.job.cancelled])
        if not self.rows:
            return finished
        model = self.lane.model
        device = self.mask.device
        tokens = torch.tensor([[row.next_input] for row in self.rows], device=device)
        positions = torch.tensor([[row.position] for row in self.rows], device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.lane.prepare([row.job.vector for row in self.rows])
        model.prompts_cached = model.adaptation.prompts is not None  # the prompt tokens are in the cache now
        try:
            output = model.backbone(inputs_embeds=model.base().get_input_embeddings()(tokens), attention_mask=self.mask,
                                    position_ids=positions, cache=self.cache, use_cache=True)
        finally:
            model.prompts_cached = False
        logits = model.head(output.last_hidden_state[:, -1])
        ended = []
        for index, row in enumerate(self.rows):
            row.position += 1
            reason = self._take(row, logits[index])
            if reason is not None:
                ended.append((index, reason))
        finished += [(self.rows[index], reason) for index, reason in ended]
        self._leave([index for index, _ in ended])
        return finished

    def abandon(self) -> list[Row]:
        """Every row, dropped with the cache (after a failed step, whose cache is in no known state)."""
        rows, self.rows, self.cache, self.mask = self.rows, [], None, None
        return rows

    def _take(self, row: Row, logits: torch.Tensor) -> str | None:
        """The row's next token, as generating alone picks and stops it; a finish reason when it ends the answer."""
        job = row.job
        token = next_token(logits, job.options, row.generator, job.tokens)
        if token in job.stop_ids:
            return "stop"
        job.tokens.append(token)
        if job.on_token(token):
            return "stop"
        if len(job.tokens) >= job.options.max_new_tokens:
            return "length"
        row.next_input = token
        return None

    def _merge(self, row: Row, cache, mask: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask = [row], cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_keys(mine.keys, width), _pad_keys(theirs.keys, width)])
            mine.values = torch.cat([_pad_keys(mine.values, width), _pad_keys(theirs.values, width)])
        self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(mask, width)])
        self.rows.append(row)

    def _leave(self, indices: list[int]) -> None:
        """Drop these rows, and the cached columns that are padding for every row left."""
        if not indices:
            return
        keep = [index for index in range(len(self.rows)) if index not in set(indices)]
        self.rows = [self.rows[index] for index in keep]
        if not keep:
            self.cache = self.mask = None
            return
        kept = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[kept]
        start = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns no row attends to
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[kept, :, start:], layer.values[kept, :, start:]
        self.mask = mask[:, start:]
