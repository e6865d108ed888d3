"""OpenAI's chat completions and completions: a request's prompts become `GenerationJob`s for the engine, and the
tokens it sends back become text (cut at stop strings), answered whole or streamed as server-sent events.

Decoding reads what `jrft predict` reads (`config.Decoding`): an omitted temperature answers greedily and an omitted
repetition_penalty (vLLM's extension) is the app's default, as the run's own answers are made (OpenAI's default
temperature would sample); an omitted seed draws one when sampling."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, StreamingResponse

from ..core.config import Decoding
from ..core.errors import UserError
from .bank import Vector
from .batching import Engine
from .errors import APIError
from .jobs import GenerationJob
from .schemas import ChatRequest, CompletionRequest, Sampling
from .text import Answer, turns_of

SEED_DRAWN_BELOW = 2**31


def decoding(body: Sampling, wanted: int | None, prompt_tokens: int, vector: Vector, cap: int) -> Decoding:
    """The request's decoding settings; a prompt (with the answer asked for) longer than the context is refused."""
    room = vector.context - prompt_tokens
    asked = prompt_tokens + (wanted or 1)
    if room <= 0 or (wanted is not None and wanted > room):
        raise APIError(400, f"This model's maximum context length is {vector.context} tokens; this request needs "
                            f"{asked} ({prompt_tokens} in the prompt, {wanted or 1} for the answer). Shorten the "
                            "prompt or ask for fewer tokens.", param="messages", code="context_length_exceeded")
    temperature = body.temperature or 0.0
    seed = body.seed if body.seed is not None else (secrets.randbelow(SEED_DRAWN_BELOW) if temperature > 0 else 0)
    penalty = {} if body.repetition_penalty is None else {"repetition_penalty": body.repetition_penalty}
    try:
        return Decoding(max_new_tokens=wanted or min(cap, room), temperature=temperature,
                        top_p=1.0 if body.top_p is None else body.top_p, seed=seed, **penalty)
    except UserError as error:
        raise APIError(400, str(error)) from None


class Generation:
    """One request's answers (one per prompt) on their way from the engine thread to the response: the engine
    calls `_token` and `_done`, which queue events for the route's event loop."""

    def __init__(self, vector: Vector, prompts: Sequence[list[int]], options: Decoding, stops: Sequence[str]):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.answers = [Answer(vector.encoder.tokenizer, stops) for _ in prompts]
        self.jobs = [GenerationJob(vector, list(ids), options, vector.encoder.stop_ids, partial(self._token, index),
                                   partial(self._done, index)) for index, ids in enumerate(prompts)]

    def _token(self, index: int, token: int) -> bool:
        piece = self.answers[index].add(self.jobs[index].tokens)
        if piece:
            self._put(("text", index, piece))
        return self.answers[index].stopped

    def _done(self, index: int, reason: str, error: Exception | None) -> None:
        piece = self.answers[index].add(self.jobs[index].tokens, final=True)
        if piece:
            self._put(("text", index, piece))
        self._put(("done", index, "stop" if self.answers[index].stopped else reason, error))

    def _put(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop closed: the server is stopping
            pass

    async def events(self) -> AsyncIterator[tuple]:
        """("text", index, piece) and ("done", index, finish reason, error) until every answer is done."""
        left = len(self.jobs)
        while left:
            event = await self.queue.get()
            left -= event[0] == "done"
            yield event

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled = True

    def usage(self) -> dict:
        prompt = sum(len(job.prompt_ids) for job in self.jobs)
        answered = sum(len(job.tokens) for job in self.jobs)
        return {"prompt_tokens": prompt, "completion_tokens": answered, "total_tokens": prompt + answered}


class Shape:
    """How one route writes its answers: OpenAI's chat completion objects, or its (legacy) completion objects."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _object(self, kind: str, choices: list, **rest) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices,
                "system_fingerprint": None, **rest}

    def body(self, texts: Sequence[str], reasons: Sequence[str], usage: dict) -> dict:
        if self.chat:
            choices = [{"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": reason} for index, (text, reason) in enumerate(zip(texts, reasons))]
            return self._object("chat.completion", choices, usage=usage)
        choices = [{"index": index, "text": text, "logprobs": None, "finish_reason": reason}
                   for index, (text, reason) in enumerate(zip(texts, reasons))]
        return self._object("text_completion", choices, usage=usage)

    def chunk(self, index: int, text: str | None = None, reason: str | None = None, role: bool = False) -> str:
        if self.chat:
            delta = ({"role": "assistant", "content": ""} if role else {}) | ({"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            return _event(self._object("chat.completion.chunk", [choice]))
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        return _event(self._object("text_completion", [choice]))

    def usage_chunk(self, usage: dict) -> str:
        return _event(self._object("chat.completion.chunk" if self.chat else "text_completion", [], usage=usage))


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def answer(engine: Engine, vector: Vector, prompts: Sequence[list[int]], body: Sampling, wanted: int | None,
                 cap: int, shape: Shape):
    """Generate an answer to every prompt: the response, whole or streamed."""
    options = decoding(body, wanted, max(map(len, prompts)), vector, cap)
    generation = Generation(vector, prompts, options, body.stops())
    for job in generation.jobs:
        engine.submit_generation(job)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_streamed(generation, shape, usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    reasons = [""] * len(prompts)
    try:
        async for kind, index, *rest in generation.events():
            if kind == "done":
                reasons[index] = rest[0]
                if rest[1] is not None:
                    raise APIError(500, f"Generating failed: {rest[1]}", kind="server_error")
    finally:
        generation.cancel()  # leaves the batch when the client went away before the answer was done
    return JSONResponse(shape.body([answer.text for answer in generation.answers], reasons, generation.usage()))


async def _streamed(generation: Generation, shape: Shape, with_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a first chunk per answer, its text as it grows, its finish reason, then [DONE]. A client
    that goes away ends this generator (Starlette cancels it): its answers leave the batch at the next step."""
    try:
        if shape.chat:
            for index in range(len(generation.jobs)):
                yield shape.chunk(index, role=True)
        async for kind, index, *rest in generation.events():
            if kind == "text":
                yield shape.chunk(index, text=rest[0])
                continue
            if rest[1] is not None:
                yield _event(APIError(500, f"Generating failed: {rest[1]}", kind="server_error").body())
            yield shape.chunk(index, reason=rest[0])
        if with_usage:
            yield shape.usage_chunk(generation.usage())
        yield "data: [DONE]\n\n"
    finally:
        generation.cancel()


async def chat(engine: Engine, vector: Vector, body: ChatRequest, cap: int):
    if not vector.generates:
        raise APIError(400, f"{vector.name} is a {vector.task.name} model, which does not generate text; "
                            f"{_where(vector)}", param="model", code="model_not_generative")
    turns = turns_of(body.messages)
    ids = await run_in_threadpool(vector.encoder.whole_prompt_ids, turns)
    return await answer(engine, vector, [ids], body, body.max_completion_tokens or body.max_tokens, cap,
                        Shape(True, vector.name))


async def complete(engine: Engine, vector: Vector, body: CompletionRequest, cap: int):
    if not vector.generates:
        raise APIError(400, f"{vector.name} is a {vector.task.name} model, which does not generate text; "
                            f"{_where(vector)}", param="model", code="model_not_generative")
    texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not texts:
        raise APIError(400, "'prompt' is empty.", param="prompt")
    tokenizer = vector.encoder.tokenizer
    prompts = await run_in_threadpool(lambda: [tokenizer(text)["input_ids"] for text in texts])
    if not all(prompts):
        raise APIError(400, "A prompt has no tokens; give it some text.", param="prompt")
    return await answer(engine, vector, prompts, body, body.max_tokens, cap, Shape(False, vector.name))


def _where(vector: Vector) -> str:
    routes = vector.routes()
    return f"send it to {' or '.join(routes)}." if routes else "it answers no route."
