"""Starting a server: the base model and the vectors loaded, the engine's thread, and uvicorn on a socket bound
first (port 0 takes a free one, so the address announced is always the real one). `serve` blocks until Ctrl-C
(`jrft serve`); `Running` runs one in a background thread (tests, benchmarks)."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..core.formatting import format_bytes
from . import API_KEY_VARIABLE
from .app import Server, create_app
from .bank import Bank, vector_source
from .batching import Engine
from .metrics import Metrics

log = logging.getLogger("jrft.serve")


@dataclass(frozen=True)
class ServeSettings:
    sources: tuple[str, ...] = ()  # run folders, vector files, or NAME=PATH
    model: str | None = None  # the base model; by default the one the first vector was trained on
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "auto"
    max_batch: int = 32
    window_ms: float = 5.0
    max_tokens: int = 512
    threads: int | None = None  # CPU threads of the forward passes (None: torch's default, every core)
    trust_remote_code: bool = False


def open_server(settings: ServeSettings, say: Callable[[str], None] = log.info) -> Server:
    """The base model and every vector loaded (all on one base, or a refusal naming the one that is not), and the
    engine started."""
    if settings.max_batch < 1 or settings.window_ms < 0 or settings.max_tokens < 1 or (settings.threads or 1) < 1:
        raise UserError("--max-batch, --max-tokens and --threads take 1 or more, --batch-window-ms 0 or more.")
    sources = [vector_source(text) for text in settings.sources]
    if settings.threads:
        torch.set_num_threads(settings.threads)  # loading's products too (the engine's thread sets its own)
    started = time.perf_counter()
    bank = Bank.open(settings.model, settings.device, settings.trust_remote_code,
                     sources[0][1] if sources else None)
    say(f"loaded the base model {bank.base_name} on {bank.device} in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    try:
        added = bank.add(sources)
    except UserError as error:
        raise type(error)(f"{error} One server serves the vectors of one base model; serve another base in a "
                          "process of its own (another --port).") from None
    if added:
        shifts = sum(vector.shifts.nbytes for vector in added if vector.shifts is not None)
        say(f"loaded {len(added)} vector(s) in {time.perf_counter() - started:.1f} s ({format_bytes(shifts)} of "
            "per-layer shifts)")
    engine = Engine(Metrics(), settings.max_batch, settings.window_ms / 1000, settings.threads)
    engine.start()
    return Server(bank, engine, engine.metrics, settings.api_key or None, settings.max_tokens)


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for an address other machines can reach (None on the loopback)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    keyless = "" if api_key else (f" without an API key (--api-key or {API_KEY_VARIABLE}): anyone who can reach "
                                  "it can use it")
    return (f"serving on {host}, which other machines can reach{keyless}. The traffic is plain HTTP; use a "
            "loopback address (the default, 127.0.0.1) unless you mean to share it.")


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        raise UserError(f"Cannot listen on {host}:{port}: {error.strerror or error} (another server there? choose "
                        "another --port, or 0 for a free one).") from None
    sock.listen(2048)
    return sock


def _uvicorn(server: Server):
    import uvicorn

    config = uvicorn.Config(create_app(server), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=3)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(settings: ServeSettings) -> None:
    """`jrft serve`: load, announce (a JSON line on stdout: the address, the base model, the vectors), answer until
    Ctrl-C."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    sock = bind(settings.host, settings.port)  # before loading: a taken port is refused at once
    warning = exposure_warning(settings.host, settings.api_key)
    if warning:
        log.warning("warning: %s", warning)
    server = open_server(settings)
    url = url_of(sock)
    print(json.dumps({"url": url, "openai_base_url": f"{url}/v1", "base": server.bank.base_name,
                      "vectors": [vector.name for vector in server.bank.vectors()[1:]]}), flush=True)
    log.info("serving on %s/v1 (Ctrl-C stops)", url)
    try:
        _uvicorn(server).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down on Ctrl-C, then raised it again: a requested stop
        pass
    finally:
        server.engine.stop()
        sock.close()
    log.info("stopped")


class Running:
    """A server answering in a background thread on `host` (port 0: a free one), until `stop`."""

    def __init__(self, server: Server, host: str = "127.0.0.1", port: int = 0):
        self.server = server
        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self._uvicorn = _uvicorn(server)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self.socket]},
                                        name="jrft-serve-http", daemon=True)

    def start(self, timeout_s: float = 30) -> Running:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("The server did not start.")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=10)
        self.server.engine.stop()
        self.socket.close()
