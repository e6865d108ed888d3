"""The engine: one thread that runs every forward pass, so that concurrent requests share batches.

Requests queue per lane (bank.py). Each round, for every lane with work: waiting answers join its running batch
(decoding.py) and every running answer advances one token, then up to `max_batch` queued rows of texts (classify,
tag, embeddings: any vectors' of the lane, mixed) go through the model in one batch. When nothing is decoding, the
first request waits `window_s` for others to arrive, so requests sent together run together."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import torch

from .bank import Lane
from .decoding import RunningBatch
from .jobs import GenerationJob, PredictJob
from .metrics import Metrics

log = logging.getLogger(__name__)
PREFILL_TOKENS = 1024  # prompt tokens read per round before the running answers advance again (at least one prompt)


class Engine:
    def __init__(self, metrics: Metrics, max_batch: int = 32, window_s: float = 0.005, threads: int | None = None):
        self.metrics, self.max_batch, self.window_s, self.threads = metrics, max_batch, window_s, threads
        self._wake = threading.Condition()
        self._waiting: dict[Lane, deque[GenerationJob]] = {}
        self._rows: dict[Lane, deque[tuple[PredictJob, int]]] = {}
        self._running: dict[Lane, RunningBatch] = {}  # the engine thread's own
        self._first_queued: float | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="jrft-serve-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # --- from the routes --------------------------------------------------------------------------------------
    def submit_predict(self, job: PredictJob) -> None:
        with self._wake:
            self._rows.setdefault(job.vector.lane, deque()).extend((job, index) for index in range(len(job.rows)))
            self._queued()

    def submit_generation(self, job: GenerationJob) -> None:
        with self._wake:
            self._waiting.setdefault(job.vector.lane, deque()).append(job)
            self._queued()

    def _queued(self) -> None:
        if self._first_queued is None:
            self._first_queued = time.perf_counter()
        self._wake.notify()

    # --- the engine thread ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            with self._wake:
                while not self._stopping and not self._has_work():
                    self._wake.wait()
                if self._stopping:
                    break
                self._gather()
                lanes = {*self._waiting, *self._rows, *self._running}
                self._first_queued = None
            for lane in lanes:
                try:
                    self._decode(lane)
                    self._predict(lane)
                except Exception as error:  # never lose the engine: fail what is queued, serve what comes next
                    log.exception("The engine failed")
                    self._fail_everything(error)
            self.metrics.running_rows = sum(len(batch.rows) for batch in self._running.values())
        self._fail_everything(RuntimeError("The server is shutting down."))

    def _has_work(self) -> bool:
        return any(self._waiting.values()) or any(self._rows.values()) or bool(self._running)

    def _gather(self) -> None:
        """With no answer decoding, give requests sent together `window_s` to arrive (up to a full batch)."""
        if self._running or self._first_queued is None:
            return
        deadline = self._first_queued + self.window_s
        while not self._stopping and time.perf_counter() < deadline and self._queued_count() < self.max_batch:
            self._wake.wait(max(deadline - time.perf_counter(), 0.0))

    def _queued_count(self) -> int:
        return sum(map(len, self._waiting.values())) + sum(map(len, self._rows.values()))

    def _decode(self, lane: Lane) -> None:
        batch = self._running.get(lane)
        if batch is None:
            if not self._waiting.get(lane):
                return
            batch = RunningBatch(lane, self.max_batch)
        self._admit(lane, batch)
        if batch.rows:
            started = time.perf_counter()
            rows, vectors = len(batch.rows), len({id(row.job.vector) for row in batch.rows})
            try:
                finished = batch.step()
            except Exception as error:  # a failing pass fails its answers, never the server
                log.exception("A decoding step failed")
                self._end([(row, "error") for row in batch.abandon()], error)
            else:
                self._end(finished, None)
            self.metrics.decode_step(rows, vectors, time.perf_counter() - started)
        if batch.rows:
            self._running[lane] = batch
        else:
            self._running.pop(lane, None)

    def _admit(self, lane: Lane, batch: RunningBatch) -> None:
        """Waiting answers join the batch while it has room, up to PREFILL_TOKENS of prompts a round."""
        read = 0
        while batch.room > 0 and read < PREFILL_TOKENS:
            with self._wake:
                waiting = self._waiting.get(lane)
                if not waiting:
                    self._waiting.pop(lane, None)
                    return
                job = waiting.popleft()
            read += len(job.prompt_ids)
            self.metrics.prompt_tokens(len(job.prompt_ids))
            try:
                reason = batch.join(job)
            except Exception as error:
                log.exception("Reading a prompt failed")
                job.on_done("error", error)
                continue
            if reason is not None:
                job.on_done(reason, None)
                self.metrics.answer_done(job)

    def _end(self, finished, error: Exception | None) -> None:
        for row, reason in finished:
            row.job.on_done(reason, error)
            self.metrics.answer_done(row.job)

    def _predict(self, lane: Lane) -> None:
        with self._wake:
            queued = self._rows.get(lane)
            if not queued:
                self._rows.pop(lane, None)
                return
            taken = [queued.popleft() for _ in range(min(self.max_batch, len(queued)))]
        taken = [(job, index) for job, index in taken if not job.failed]
        if not taken:
            return
        started = time.perf_counter()
        try:
            self._read(lane, taken)
        except Exception as error:
            log.exception("A batch of texts failed")
            for job in {job for job, _ in taken}:
                job.fail(error)
        self.metrics.predict_batch(len(taken), len({id(job.vector) for job, _ in taken}),
                                   time.perf_counter() - started)

    @torch.no_grad()
    def _read(self, lane: Lane, taken: list[tuple[PredictJob, int]]) -> None:
        """One forward pass over rows of any of the lane's vectors; each job's read-out takes its rows' states."""
        model = lane.model
        device = model.head.weight.device
        rows = [job.rows[index] for job, index in taken]
        inputs = {key: value.to(device) for key, value in taken[0][0].vector.encoder.collate(rows).items()}
        lane.prepare([job.vector for job, _ in taken])
        hidden = model.hidden_states(**inputs)
        for job in dict.fromkeys(job for job, _ in taken):
            positions = [place for place, (owner, _) in enumerate(taken) if owner is job]
            picked = torch.tensor(positions, device=device)
            outputs = job.read_out(hidden[picked], inputs["attention_mask"][picked], inputs["input_ids"][picked],
                                   [rows[place] for place in positions])
            job.finish_rows([taken[place][1] for place in positions], outputs)

    def _fail_everything(self, error: Exception) -> None:
        with self._wake:
            waiting = [job for jobs in self._waiting.values() for job in jobs]
            queued = {job for rows in self._rows.values() for job, _ in rows}
            self._waiting.clear()
            self._rows.clear()
        for job in waiting:
            job.on_done("error", error)
        for batch in self._running.values():
            self._end([(row, "error") for row in batch.rows], error)
        self._running.clear()
        for job in queued:
            job.fail(error)
