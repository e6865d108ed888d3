"""The routes that read texts in one forward pass: /predict (a classify or tag vector's answers, each in the form its
task gives, `Task.api_answer`) and OpenAI's /v1/embeddings (an encoder's token states, averaged and scaled to unit
length, with the named vector's shifts). Rows of every vector of a lane share batches (batching.py)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool

from .bank import Vector
from .batching import Engine
from .errors import APIError
from .jobs import PredictJob, ReadOut
from .schemas import EmbeddingRequest, PredictRequest


async def run(engine: Engine, vector: Vector, rows: list[dict], read_out: ReadOut) -> list:
    """The rows' outputs, computed by the engine in batches shared with other requests."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def finished(outputs, error) -> None:
        def settle() -> None:
            if not done.done():
                done.set_exception(error) if error is not None else done.set_result(outputs)
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop closed: the server is stopping
            pass

    engine.submit_predict(PredictJob(vector, rows, read_out, finished))
    try:
        return await done
    except Exception as error:
        raise APIError(500, f"Reading the texts failed: {error}", kind="server_error") from None


def _task_outputs(vector: Vector) -> ReadOut:
    def read_out(hidden, mask, ids, rows):
        outputs = vector.task.read_out(vector.model, hidden, mask, ids)
        return vector.task.row_outputs(outputs.float().cpu().numpy(), rows)

    return read_out


def _texts(inputs, vector: Vector) -> tuple[list[str], list[str] | None]:
    """(texts, second texts) of /predict's inputs: a text, a list of texts, or a list of [text, text] pairs for a
    run trained on pairs."""
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    pairs = all(isinstance(item, list) for item in items)
    wants_pairs = bool((vector.metadata.get("columns") or {}).get("text_pair"))
    if pairs and all(len(item) == 2 for item in items) and wants_pairs:
        return [item[0] for item in items], [item[1] for item in items]
    if wants_pairs:
        raise APIError(400, f"{vector.name} reads text pairs: send inputs as [[first, second], ...].", param="inputs")
    if not all(isinstance(item, str) for item in items):
        raise APIError(400, f"{vector.name} reads single texts: send a text or a list of texts.", param="inputs")
    return items, None


async def predict(engine: Engine, vector: Vector, body: PredictRequest):
    """Each input's answer ({label, score} best first for classify, entities for tag); a single input's alone."""
    if not vector.predicts:
        raise APIError(400, f"{vector.name} has no trained head to predict with; /predict answers classify and tag "
                            f"vectors" + (f", {vector.name} answers {' and '.join(vector.routes())}." if
                                          vector.routes() else "."), param="model", code="model_not_predictive")
    texts, pairs = _texts(body.inputs, vector)
    task = vector.task
    examples = task.examples_from_texts(texts, pairs)
    rows, truncated = await run_in_threadpool(task.encode, vector.encoder, examples)
    outputs = await run(engine, vector, rows, _task_outputs(vector))
    joined = task.join_outputs(outputs, vector.model.head.out_features)
    answers = [task.api_answer(record) for record in task.prediction_records(joined, vector.label_names, examples)]
    return (answers[0] if isinstance(body.inputs, str) else answers), truncated


def _mean_pooled(hidden, mask, ids, rows) -> list[np.ndarray]:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return list(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())


async def embed(engine: Engine, vector: Vector, base: Vector, body: EmbeddingRequest) -> dict:
    """OpenAI's embeddings object; `base` encodes the texts uncut (up to the model's context)."""
    if not vector.embeds:
        raise APIError(400, f"{vector.name} is on a decoder; embeddings are served for an encoder base model.",
                       param="model", code="model_not_embedding")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    tokenizer = base.encoder.tokenizer
    lengths = await run_in_threadpool(lambda: [len(ids) for ids in tokenizer(texts)["input_ids"]])
    longest = max(lengths)
    if longest > base.context:
        raise APIError(400, f"This model's maximum context length is {base.context} tokens; input "
                            f"{lengths.index(longest)} has {longest}.", param="input", code="context_length_exceeded")
    rows, _ = await run_in_threadpool(base.encoder.encode, texts)
    vectors = await run(engine, vector, rows, _mean_pooled)
    return {"object": "list", "model": vector.name,
            "data": [{"object": "embedding", "index": index, "embedding": _written(values, body.encoding_format)}
                     for index, values in enumerate(vectors)],
            "usage": {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}}


def _written(values: np.ndarray, encoding: str) -> Sequence[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(values.astype("<f4").tobytes()).decode()
    return values.tolist()
