"""The forms a merged model is written in, each loaded by a stock library, and which of them fits a run.

Every form folds the method into the weights (so only methods that fold have any) and writes a folder atomically
with `jrft_manifest.json`. `transformers` is the task's stock class (a classifier that reads the first token, or
a decoder's last); `sentence-transformers` adds the Pooling and Dense modules that compute a mean- (or first-,
last-token-) pooled head; `onnx` holds the whole read-out inside its graph, so it fits every pooling and task;
`gguf` (and `gguf-f16`) is a generated-text run of a Llama-form decoder as one file for llama.cpp and Ollama.
Importing this module is cheap (torch loads when a form is checked or written)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError
from ..registry import lookup

AUTO = "auto"


def _transformers():
    from . import merged

    return merged.check_transformers, merged.export_merged


def _sentence_transformers():
    from . import sentence_transformers as export_st

    return export_st.check, export_st.export_sentence_transformers


def _onnx():
    from . import onnx as export_onnx

    return export_onnx.check, export_onnx.export_onnx


def _gguf():
    from . import gguf as export_gguf

    return export_gguf.check, export_gguf.export_gguf


def _gguf_f16():
    from . import gguf as export_gguf

    return export_gguf.check, export_gguf.export_gguf_f16


# who reads the biases a SLaSh merge folds in (llama.cpp's llama graph and Ollama add them; transformers drops them)
_GGUF_BIASES = "they add SLaSh's folded biases, which transformers' GGUF loader drops (use the transformers folder there)"


@dataclass(frozen=True)
class ExportForm:
    name: str
    title: str  # as a menu names it
    loads_with: str  # one line: who loads it ({stock_class}: the task's transformers class)
    # its module's (check, write), imported when first asked: check(model, method) raises an ArtifactError that
    # says why the form cannot hold a run; write(model, method, tokenizer, metadata, out_dir) -> the folder
    functions: Callable[[], tuple[Callable[..., None], Callable[..., Path]]]

    def loader(self, model) -> str:
        return self.loads_with.format(stock_class=model.task.stock_class)

    def problem(self, model, method) -> str:
        """Why this form cannot hold the run ('' when it can)."""
        check, _write = self.functions()
        try:
            check(model, method)
        except ArtifactError as error:
            return str(error)
        return ""

    def write(self, model, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
        _check, write = self.functions()
        return write(model, method, tokenizer, metadata, Path(out_dir))


FORMS: dict[str, ExportForm] = {form.name: form for form in (  # the order `auto` tries them in
    ExportForm("transformers", "Transformers folder",
               "transformers' {stock_class}.from_pretrained(folder) loads it", _transformers),
    ExportForm("sentence-transformers", "Sentence-transformers folder",
               "SentenceTransformer(folder).encode(texts) returns the logits", _sentence_transformers),
    ExportForm("onnx", "ONNX model", "onnxruntime runs it without PyTorch (model.onnx, tokenizer.json)", _onnx),
    ExportForm("gguf", "GGUF file (llama.cpp, Ollama)", f"llama.cpp / Ollama run model.gguf (f32); {_GGUF_BIASES}",
               _gguf),
    ExportForm("gguf-f16", "GGUF file, f16 (llama.cpp, Ollama)",
               f"llama.cpp / Ollama run model.gguf (f16 matrices, half the size); {_GGUF_BIASES}", _gguf_f16),
)}
FORM_CHOICES = (AUTO, *FORMS)


def get_form(name: str) -> ExportForm:
    return lookup(FORMS, name, "export format")


def fitting(model, method) -> list[ExportForm]:
    """The forms this run can be written in, in order (none when its method cannot be folded)."""
    return [form for form in FORMS.values() if not form.problem(model, method)]


def choose(model, method, name: str = AUTO) -> tuple[ExportForm, dict[str, str]]:
    """The named form, or for `auto` the first that fits, with why each earlier one does not; an ArtifactError
    saying why when the named form (or, for `auto`, every form) cannot hold the run."""
    if name != AUTO:
        form = get_form(name)
        problem = form.problem(model, method)
        if problem:
            raise ArtifactError(problem)
        return form, {}
    passed_over = {}
    for form in FORMS.values():
        problem = form.problem(model, method)
        if not problem:
            return form, passed_over
        passed_over[form.name] = problem
    raise ArtifactError(next(iter(passed_over.values())))

