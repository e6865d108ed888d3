"""The models a server answers with: one base model, loaded once, and the vectors on it.

A vector whose method can mix rows (`Method.row_shifts`: SLaSh, the linear probe) costs its per-layer shifts and its
head: its rows run on the shared base model, each adding its own shifts (`RowMix`), in batches with every other
vector's rows. A vector of another method (LoRA, BitFit, JR-WARP ...) gets a model of its own, a lane whose batches
hold its rows only. Vectors are added and removed while serving; a request holds the `Vector` it named, so one in
flight finishes even when its vector is removed."""

from __future__ import annotations

import ctypes
import datetime
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..core import runs
from ..core.build import build_model
from ..core.config import ModelSpec
from ..core.errors import ArtifactError, UserError, first_line
from ..core.export.vector import check_base, check_projection, read_vector, restore
from ..core.inference import pick_device
from ..core.methods import MethodSpec, get_method
from ..core.methods.rows import RowMix, RowShifts
from ..core.models import JrftModel, LoadedBackbone, load_backbone, weights_fingerprint
from ..core.projection import ProjectionCache
from ..core.tasks import DEFAULT_TASK, all_tasks, get_task
from ..core.train.precision import BASE_TORCH_DTYPES

UNLIMITED = 1 << 30  # the context of a model whose config names no position limit


@dataclass(eq=False)
class Lane:
    """A model that runs batches: the shared base model, whose rows each add their own vector's shifts (`mix`), or
    one vector's own model (`mix` None: every row is that vector's)."""

    model: JrftModel
    mix: RowMix | None = None

    def prepare(self, vectors: Sequence[Vector]) -> None:
        """Before a forward pass: the vector of each row, in batch order."""
        if self.mix is not None:
            self.mix.use([vector.shifts or RowShifts() for vector in vectors])


@dataclass(eq=False)
class Vector:
    """What a request names: the base model or a vector, with its task, head, encoder and lane."""

    name: str
    model: JrftModel  # its task, head and pooling (on its lane's model)
    encoder: object
    lane: Lane
    metadata: dict = field(default_factory=dict)  # its vector file's; empty for the base model
    shifts: RowShifts | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def task(self):
        return self.model.task

    @property
    def label_names(self) -> tuple[str, ...] | None:
        names = self.metadata.get("label_names")
        return tuple(names) if names else None

    @property
    def generates(self) -> bool:
        return self.task.generates

    @property
    def predicts(self) -> bool:
        """Answers /predict: a trained vector whose task reads its outputs (the base model has no trained head)."""
        return bool(self.metadata) and not self.task.generates

    @property
    def embeds(self) -> bool:
        """Answers /v1/embeddings: an encoder's token states, pooled."""
        return not self.model.family.causal

    @property
    def context(self) -> int:
        """The most tokens a request may take (prompt and answer), the vector's prompt tokens left out."""
        positions = self.model.positions()
        return UNLIMITED if positions is None else positions - self.model.prompt_count()

    def routes(self) -> list[str]:
        return ((["/v1/chat/completions", "/v1/completions"] if self.generates else [])
                + (["/predict"] if self.predicts else []) + (["/v1/embeddings"] if self.embeds else []))

    def describe(self, base_name: str) -> dict:
        """The vector as /v1/models lists it: OpenAI's fields, then its task, method, metrics and privacy."""
        privacy = self.metadata.get("privacy") or {}
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "jrft",
                "root": base_name, "parent": None if self.name == base_name else base_name,
                "task": self.task.name if self.metadata or self.generates else None,
                "method": self.metadata.get("method"), "metrics": self.metadata.get("metrics", {}),
                "epsilon": privacy.get("epsilon_spent"), "delta": privacy.get("delta"),
                "routes": self.routes(), "batched_with_other_vectors": self.lane.mix is not None,
                "shift_bytes": self.shifts.nbytes if self.shifts is not None else 0}


def vector_source(text: str) -> tuple[str, Path]:
    """(name, vector file) of a command-line source: a run folder (named by the folder), a vector file (named by its
    run folder, or its own name outside one), or NAME=PATH."""
    name, equals, rest = text.partition("=")
    if equals and name and not Path(text).exists():
        return name.strip(), _vector_file(Path(rest))
    path = _vector_file(Path(text))
    inside_run = path.stem == runs.VECTOR_NAME
    return (path.parent.name if inside_run else path.stem), path


def _vector_file(path: Path) -> Path:
    path = path.expanduser()
    if path.is_dir():
        found = path / runs.VECTOR_FILE
        if not found.is_file():
            raise UserError(f"{path} holds no finished run (no {runs.VECTOR_FILE}).")
        return found
    if not path.is_file():
        raise UserError(f"No run folder or vector file at {path}.")
    return path.with_suffix(".safetensors") if path.suffix == ".json" else path


def _created(metadata: dict) -> int:
    try:
        return int(datetime.datetime.fromisoformat(metadata["created"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return int(time.time())


@dataclass
class _Read:
    """A vector file read and checked, before it is served."""

    name: str
    path: Path
    tensors: dict
    metadata: dict
    model: JrftModel


def _hand_back_freed_memory() -> None:
    """Loading drew the projections (hundreds of MB on a decoder) and freed them, but glibc keeps freed heap for
    later: hand it back to the system, so that the server's memory is what it serves (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Bank:
    """The base model and the vectors served on it, by name; safe to change from any thread."""

    def __init__(self, loaded: LoadedBackbone, spec: ModelSpec, device: torch.device):
        self.loaded, self.spec, self.device = loaded, spec, device
        self.base_name = spec.name_or_path
        loaded.model.to(device)
        if loaded.output_head is not None:
            loaded.output_head.to(device)
        task = next((task for task in all_tasks() if task.generates), None) if loaded.family.causal else None
        base = build_model(spec, None, task or get_task(DEFAULT_TASK), loaded=loaded).model.to(device).eval()
        mix = RowMix(base)
        base.adapt(mix)
        self.shared = Lane(base, mix)
        self.base = Vector(self.base_name, base, self._encoder(base.task, base, None), self.shared)
        self._vectors: dict[str, Vector] = {}
        self._fingerprints = {"fp32": loaded.fingerprint}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, model: str | None, device: str = "auto", trust_remote_code: bool = False,
             first_vector: Path | None = None) -> Bank:
        """The base model named, or the one `first_vector` was trained on."""
        if model is None:
            if first_vector is None:
                raise UserError("Name what to serve: run folders or vector files, or --model BASE for the bare base "
                                "model.")
            model = read_vector(first_vector)[1]["base_model"]["id"]
        spec = ModelSpec(name_or_path=model, trust_remote_code=trust_remote_code)
        task = next(task for task in all_tasks() if task.generates)  # a decoder keeps its language-model head
        return cls(load_backbone(spec, task), spec, pick_device(device))

    # --- reading ----------------------------------------------------------------------------------------------
    def get(self, name: str) -> Vector | None:
        if name == self.base_name:
            return self.base
        with self._lock:
            return self._vectors.get(name)

    def vectors(self) -> list[Vector]:
        with self._lock:
            return [self.base, *self._vectors.values()]

    # --- changing ---------------------------------------------------------------------------------------------
    def add(self, sources: Sequence[tuple[str, Path]]) -> list[Vector]:
        """Load vectors (all of them, or none when one is refused: its name, then why)."""
        with self._lock:
            self._refuse_taken_names([name for name, _ in sources])  # before anything loads
        projections = ProjectionCache()  # the projections of one seed are drawn once for all of them
        read = []
        for name, path in sources:
            try:
                read.append(_Read(name, Path(path), *self._read(name, Path(path), projections)))
            except UserError as error:
                raise type(error)(f"{name} ({path}): {error}") from None
        made = self._made(read, projections)
        del projections
        _hand_back_freed_memory()
        with self._lock:
            self._refuse_taken_names([vector.name for vector in made])  # (another request may have taken one since)
            self._vectors.update({vector.name: vector for vector in made})
        return made

    def _refuse_taken_names(self, names: list[str]) -> None:
        taken = [name for name in names if name in self._vectors or name == self.base_name]
        twice = sorted({name for name in names if names.count(name) > 1})
        if taken or twice:
            raise UserError(f"The name {(taken or twice)[0]!r} is taken; name vectors apart with NAME=PATH.")

    def remove(self, name: str) -> Vector:
        """Stop serving a vector; requests already holding it finish."""
        with self._lock:
            vector = self._vectors.pop(name, None)
        if vector is None:
            raise UserError(f"No vector called {name!r} is served" + (" (the base model cannot be removed)."
                                                                        if name == self.base_name else "."))
        return vector

    def _read(self, name: str, path: Path, projections: ProjectionCache) -> tuple[dict, dict, JrftModel]:
        """A vector file's tensors and metadata, checked against this base, and its task's model on this base."""
        if not name.strip():
            raise UserError("A vector needs a name.")
        tensors, metadata = read_vector(path)
        check_base(metadata, self._fingerprint(metadata.get("base_dtype", "fp32")), self.base_name)
        check_projection(metadata, projections)
        labels = metadata["label_names"]
        spec = replace(self.spec, pooling=metadata["pooling"])
        task = get_task(metadata.get("task_name", DEFAULT_TASK))
        return tensors, metadata, build_model(spec, None, task, len(labels) if labels else 1, loaded=self.loaded).model

    def _made(self, read: list[_Read], projections: ProjectionCache) -> list[Vector]:
        """The vectors, their shifts computed together for each method and task (`Method.row_shifts`)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for index, vector in enumerate(read):
            groups.setdefault((vector.metadata["method"], vector.model.task.name), []).append(index)
        shifts: dict[int, RowShifts | None] = {}
        for (method, _), members in groups.items():
            vectors = [(read[index].tensors, MethodSpec(**read[index].metadata["method_spec"])) for index in members]
            try:
                found = get_method(method).row_shifts(read[members[0]].model, vectors, projections)
            except KeyError as error:
                names = ", ".join(read[index].name for index in members)
                raise ArtifactError(f"{names}: the saved weights do not fit the method (no {error}).") from None
            shifts.update(zip(members, found or [None] * len(members)))
        return [self._vector(vector, shifts[index]) for index, vector in enumerate(read)]

    def _vector(self, read: _Read, shifts: RowShifts | None) -> Vector:
        if shifts is None:
            return self._own_lane(read.name, read.path, read.metadata)
        model = read.model
        if model.task.trains_head:
            heads = {key.removeprefix("head."): value for key, value in read.tensors.items()
                     if key.startswith("head.")}
            try:
                model.head.load_state_dict(heads)
            except RuntimeError as error:
                raise ArtifactError(f"{read.name}: its head does not fit this model ({first_line(error)}).") from None
        model.head.to(self.device)
        model.eval()
        return Vector(read.name, model, self._encoder(model.task, model, read.metadata), self.shared, read.metadata,
                      shifts.to(self.device), _created(read.metadata))

    def _fingerprint(self, dtype: str) -> str:
        """The fingerprint of the base as a run held it: its weights rounded to the `dtype` a run trained in
        (a run on a half-precision base recorded that one), computed once per dtype."""
        if dtype not in self._fingerprints:
            self._fingerprints[dtype] = weights_fingerprint(self.loaded.model,
                                                            BASE_TORCH_DTYPES.get(dtype, torch.float32))
        return self._fingerprints[dtype]

    def _own_lane(self, name: str, path: Path, metadata: dict) -> Vector:
        """A vector whose method changes the model itself: restored on a copy of the base model of its own."""
        restored = restore(path, self.base_name, self.spec.trust_remote_code)
        model = restored.model.to(self.device).eval()
        encoder = self._encoder(model.task, model, metadata)
        return Vector(name, model, encoder, Lane(model), metadata, None, _created(metadata))

    def _encoder(self, task, model: JrftModel, metadata: dict | None):
        """A generating vector reads prompts up to its model's context; the others cut texts at their run's maximum
        length, as `jrft predict` does."""
        context = model.positions()
        if task.generates or metadata is None:
            length = UNLIMITED if context is None else context
        else:
            length = int(metadata["max_length"])
        return task.make_encoder(self.loaded.tokenizer, length, model)
