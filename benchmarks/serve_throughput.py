"""`jrft serve` under load, on the bundled decoder (chat completions) and the bundled encoder (/predict):

- requests and tokens per second at 1, 8 and 32 concurrent clients, all requests on one vector against the same
  traffic spread over 100 vectors (the same 100-vector server answers both), and p50 / p95 latency at 8 clients;
- the server's resident memory with 1, 100 and 1,000 vectors loaded, how long they took to load, and the bytes of
  per-layer shifts each vector costs; against it, one merged model per task (what a user has today): that many
  copies of a one-model process.

    python benchmarks/serve_throughput.py [--output docs/benchmarks/serve.json] [--threads N]

Vectors are SLaSh vectors at each task's default settings with small random z (every vector answers about as the
base model does, so each traffic mix does the same work). Every server is a `jrft serve` process on 127.0.0.1;
the clients are threads of this process, each sending its next request when the last one is answered."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

CLIENTS = (1, 8, 32)
SPREAD = 100
MEMORY_COUNTS = (1, 100, 1000)
PROMPTS = ("Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
           "Describe your favourite season and why.", "Give three tips for learning to cook.",
           "What makes a good friend?", "Tell me about the history of bread.",
           "Write a poem about the sea.", "How do plants grow?")
TEXTS = ("a gorgeous , witty and moving film", "a tedious mess that never finds its footing",
         "the acting is superb but the plot is thin", "i laughed , i cried , i want to see it again",
         "an ambitious failure", "two hours of my life i will not get back",
         "charming from start to finish", "the director has a good eye but nothing to say")


def make_vectors(model: str, task_name: str, labels, count: int, folder: Path) -> list[Path]:
    """`count` SLaSh run folders on `model`: one model built, then z (and the head) drawn anew for each."""
    import torch

    from jrft_desktop.core.build import build_model
    from jrft_desktop.core.config import MethodSpec, ModelSpec
    from jrft_desktop.core.export.vector import save_vector, vector_metadata
    from jrft_desktop.core.models import load_backbone
    from jrft_desktop.core.tasks import get_task

    spec, task, method = ModelSpec(name_or_path=model), get_task(task_name), MethodSpec(name="slash")
    built = build_model(spec, method, task, len(labels) if labels else 1, loaded=load_backbone(spec, task))
    problem = "classification" if labels else "generation"
    metadata = vector_metadata(model=built.model, plan=built.plan, method_spec=built.plan.resolved(method),
                               model_spec=spec, max_length=128, problem=problem, label_names=labels,
                               columns={"text": "text", "text_pair": None, "label": "label"}, seed=0, metrics={})
    generator = torch.Generator().manual_seed(0)
    runs = []
    for index in range(count):
        with torch.no_grad():
            for parameter in built.model.parameters():
                if parameter.requires_grad:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
        run = folder / f"{task_name}-{index:04d}"
        run.mkdir(parents=True, exist_ok=True)
        save_vector(run / "vector", built.model, metadata)
        runs.append(run)
    return runs


class Server:
    """A `jrft serve` process on a free port of 127.0.0.1."""

    def __init__(self, runs: list[Path], log: Path, threads: int | None):
        self.log = log.open("w")
        started = time.perf_counter()
        extra = ["--threads", str(threads)] if threads else []
        self.process = subprocess.Popen([sys.executable, "-m", "jrft_desktop.cli", "serve", *map(str, runs),
                                         "--port", "0", "--device", "cpu", *extra], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the server did not start; see {log}")
        self.ready_s = time.perf_counter() - started
        announced = json.loads(line)
        self.url, self.names = announced["url"], announced["vectors"]
        self.loaded_s = next((float(text.split(" in ")[1].split(" s")[0]) for text in log.read_text().splitlines()
                              if "vector(s) in" in text), float("nan"))

    def memory_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    def stop(self) -> None:
        self.process.send_signal(2)
        self.process.wait(timeout=60)
        self.log.close()


def _request(client: httpx.Client, url: str, kind: str, name: str, index: int, max_tokens: int) -> int:
    """One request; the tokens it generated (decoder) or texts it read (encoder)."""
    if kind == "chat":
        body = {"model": name, "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
                "max_tokens": max_tokens}
        answer = client.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        answer.raise_for_status()
        return answer.json()["usage"]["completion_tokens"]
    answer = client.post(f"{url}/predict", json={"model": name, "inputs": TEXTS[index % len(TEXTS)]}, timeout=600)
    answer.raise_for_status()
    return 1


def traffic(server: Server, kind: str, names: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` threads sending requests back to back for `seconds` (each finishes its last one), request i of
    client c naming names[(c + i * clients) % len(names)]."""
    latencies, units, lock = [], [0], threading.Lock()
    deadline = time.perf_counter() + seconds

    def client_loop(number: int) -> None:
        with httpx.Client() as client:
            sent = 0
            while time.perf_counter() < deadline:
                name = names[(number + sent * clients) % len(names)]
                started = time.perf_counter()
                done = _request(client, server.url, kind, name, number + sent, max_tokens)
                with lock:
                    latencies.append(time.perf_counter() - started)
                    units[0] += done
                sent += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "vectors": len(names), "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 3), "units_per_s": round(units[0] / elapsed, 2),
            "latency_p50_s": round(latencies[len(latencies) // 2], 3),
            "latency_p95_s": round(latencies[min(int(0.95 * len(latencies)), len(latencies) - 1)], 3)}


def shift_bytes(server: Server) -> int:
    models = httpx.get(f"{server.url}/v1/models", timeout=60).json()["data"]
    return statistics.median(model["shift_bytes"] for model in models if model["parent"])


def bench_model(model: str, task: str, labels, kind: str, folder: Path, args) -> dict:
    runs = make_vectors(model, task, labels, max(MEMORY_COUNTS), folder / task)
    result = {"model": model, "memory": [], "traffic": []}
    for count in MEMORY_COUNTS:
        server = Server(runs[:count], folder / f"{task}-{count}.log", args.threads)
        try:
            _request(httpx.Client(), server.url, kind, server.names[0], 0, 4)  # warm up
            result["memory"].append({"vectors": count, "rss_mb": round(server.memory_mb(), 1),
                                     "load_s": server.loaded_s, "ready_s": round(server.ready_s, 1)})
            result["vector_file_bytes"] = sum(path.stat().st_size for path in runs[0].iterdir())
            result["shift_bytes"] = shift_bytes(server)
            if count == SPREAD:
                for clients in CLIENTS:
                    for names in ([server.names[0]], server.names):
                        seconds = args.decoder_seconds if kind == "chat" else args.seconds
                        cell = traffic(server, kind, names, clients, seconds, args.max_tokens)
                        print(json.dumps({"model": model, **cell}), flush=True)
                        result["traffic"].append(cell)
                result["rss_after_traffic_mb"] = round(server.memory_mb(), 1)
        finally:
            server.stop()
        print(json.dumps({"model": model, **result["memory"][-1]}), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="docs/benchmarks/serve.json")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="The encoder's traffic per cell (the requests under way then finish).")
    parser.add_argument("--decoder-seconds", type=float, default=20.0, help="The decoder's traffic per cell.")
    parser.add_argument("--max-tokens", type=int, default=32, help="Tokens per chat answer (at most).")
    parser.add_argument("--threads", type=int, help="The servers' --threads (default: every core).")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from jrft_desktop.core.config import BUNDLED_DECODER, DEFAULT_MODEL

    with tempfile.TemporaryDirectory() as folder:
        results = {"machine": f"{os.cpu_count()} CPU cores", "load_average_before": os.getloadavg(),
                   "settings": vars(args),
                   "decoder": bench_model(BUNDLED_DECODER, "generate", None, "chat", Path(folder), args),
                   "encoder": bench_model(DEFAULT_MODEL, "classify", ["negative", "positive"], "predict",
                                          Path(folder), args)}
        results["load_average_after"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
