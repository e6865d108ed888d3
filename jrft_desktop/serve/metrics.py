"""What the server counts, written in Prometheus' text format (`GET /metrics`): requests by route and status,
prompt and generated tokens, the rows of every batch (a histogram: how much sharing happened) and latency quantiles
over the latest requests."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque

QUANTILES = (0.5, 0.95, 0.99)
LATENCY_WINDOW = 2048  # the latest requests per route that the quantiles are computed over
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
PREFIX = "jrft_"


class Histogram:
    def __init__(self, buckets: tuple[int, ...]):
        self.buckets, self.counts, self.total, self.count = buckets, [0] * len(buckets), 0.0, 0

    def add(self, value: float) -> None:
        position = bisect.bisect_left(self.buckets, value)
        if position < len(self.buckets):
            self.counts[position] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return [*lines, f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:g}",
                f"{name}_count {self.count}"]


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latencies: dict[str, deque[float]] = {}
        self.tokens = Counter({"prompt": 0, "generated": 0})
        self.decode_rows, self.predict_rows = Histogram(BATCH_BUCKETS), Histogram(BATCH_BUCKETS)
        self.decode_vectors, self.predict_vectors = Histogram(BATCH_BUCKETS), Histogram(BATCH_BUCKETS)
        self.busy_seconds = 0.0
        self.running_rows = 0  # set by the engine after every round
        self.vectors = 0  # set by the app

    # --- counting -----------------------------------------------------------------------------------------------
    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            if status < 400:
                self.latencies.setdefault(route, deque(maxlen=LATENCY_WINDOW)).append(seconds)

    def prompt_tokens(self, count: int) -> None:
        with self._lock:
            self.tokens["prompt"] += count

    def answer_done(self, job) -> None:
        with self._lock:
            self.tokens["generated"] += len(job.tokens)

    def decode_step(self, rows: int, vectors: int, seconds: float) -> None:
        with self._lock:
            self.decode_rows.add(rows)
            self.decode_vectors.add(vectors)
            self.busy_seconds += seconds

    def predict_batch(self, rows: int, vectors: int, seconds: float) -> None:
        with self._lock:
            self.predict_rows.add(rows)
            self.predict_vectors.add(vectors)
            self.busy_seconds += seconds

    # --- reading ------------------------------------------------------------------------------------------------
    def text(self) -> str:
        """The Prometheus text exposition of everything counted."""
        with self._lock:
            lines = [*_metric("requests_total", "counter", "Requests answered, by route and HTTP status.",
                              [(f'route="{route}",status="{status}"', count)
                               for (route, status), count in sorted(self.requests.items())]),
                     *_metric("tokens_total", "counter", "Prompt tokens read and tokens generated.",
                              [(f'kind="{kind}"', count) for kind, count in sorted(self.tokens.items())]),
                     *_histogram("decode_batch_rows", "Answers advanced together in one decoding step.",
                                 self.decode_rows),
                     *_histogram("decode_batch_vectors", "Vectors (the base model counted as one) among the "
                                 "answers of one decoding step.", self.decode_vectors),
                     *_histogram("predict_batch_rows", "Texts read together in one batch.", self.predict_rows),
                     *_histogram("predict_batch_vectors", "Vectors among the texts of one batch.",
                                 self.predict_vectors),
                     *_metric("engine_busy_seconds_total", "counter", "Time spent in forward passes.",
                              [("", round(self.busy_seconds, 6))]),
                     *_metric("running_answers", "gauge", "Answers being generated now.", [("", self.running_rows)]),
                     *_metric("vectors", "gauge", "Vectors served (the base model not counted).",
                              [("", self.vectors)]),
                     *_metric("uptime_seconds", "gauge", "Seconds since the server started.",
                              [("", round(time.time() - self.started, 3))]),
                     *self._latency_lines()]
        return "\n".join(lines) + "\n"

    def _latency_lines(self) -> list[str]:
        samples = []
        for route, values in sorted(self.latencies.items()):
            kept = list(values)
            samples += [(f'route="{route}",quantile="{share}"', round(quantile(kept, share), 6))
                        for share in QUANTILES]
        return _metric("request_latency_seconds", "summary",
                       f"Latency of the latest {LATENCY_WINDOW} successful requests per route.", samples)


def _metric(name: str, kind: str, help_text: str, samples) -> list[str]:
    full = PREFIX + name
    return [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}",
            *(f"{full}{{{labels}}} {value}" if labels else f"{full} {value}" for labels, value in samples)]


def _histogram(name: str, help_text: str, histogram: Histogram) -> list[str]:
    full = PREFIX + name
    return [f"# HELP {full} {help_text}", f"# TYPE {full} histogram", *histogram.lines(full)]
