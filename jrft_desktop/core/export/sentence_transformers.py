"""A merged model as a sentence-transformers folder: the encoder with the method folded in (a plain transformers
model that `AutoModel` loads, label names in its config.json), the task's `Pooling` module, one `Dense` module per
linear layer after it (the head last, with the identity as its activation), `modules.json` and the tokenizer.
`SentenceTransformer(folder).encode(texts)` then returns the run's outputs (a classifier's logits)."""

from __future__ import annotations

from pathlib import Path

from .merged import check_stock_weights, check_target, max_tokens, merged_copy, stock_model, write_records
from ..models import JrftModel
from ..paths import atomic_directory

FORM = "sentence-transformers"


def check(model: JrftModel, method) -> None:
    """An ArtifactError saying why this run cannot be a sentence-transformers folder, if it cannot."""
    method.check_foldable()
    check_stock_weights(model, method)  # its encoder folder is the family's stock AutoModel
    model.task.sentence_layers(model)


def export_sentence_transformers(model: JrftModel, method, tokenizer, metadata: dict, out_dir: Path) -> Path:
    """Write the folder atomically; the trained model is left as it was (the merge works on a copy)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    check(model, method)
    out_dir = check_target(out_dir)
    work, base = merged_copy(model, method)
    pooling, layers = work.task.sentence_layers(work)
    encoder = stock_model(work, base, metadata["label_names"], "AutoModel")
    with atomic_directory(out_dir) as temp:
        encoder.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        modules = [Transformer(str(temp), max_seq_length=max_tokens(work, metadata)),
                   Pooling(work.info.hidden_size, pooling_mode=pooling)]
        for linear, activation in layers:
            bias = linear.bias
            modules.append(Dense(linear.in_features, linear.out_features, bias=bias is not None,
                                 activation_function=activation, init_weight=linear.weight.detach().clone(),
                                 init_bias=bias.detach().clone() if bias is not None else None))
        with torch.no_grad():
            SentenceTransformer(modules=modules, device="cpu").save(str(temp), create_model_card=False)
        write_records(temp, model, metadata, FORM)
    return out_dir
