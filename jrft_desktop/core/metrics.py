"""Evaluation metrics, computed from labels and model outputs (numpy only)."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def accuracy(labels, predictions) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float((labels == predictions).mean()) if labels.size else math.nan


def macro_f1(labels, predictions, num_classes: int) -> float:
    matrix = confusion_matrix(labels, predictions, num_classes)
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    present = (predicted + actual) > 0  # classes that neither occur nor are predicted do not count
    f1 = np.divide(2 * true_positive, predicted + actual, out=np.zeros_like(true_positive), where=present)
    return float(f1[present].mean()) if present.any() else math.nan


def matthews(labels, predictions, num_classes: int) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); equals the usual MCC for two classes."""
    matrix = confusion_matrix(labels, predictions, num_classes).astype(float)
    total = matrix.sum()
    correct = np.trace(matrix)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    numerator = correct * total - predicted @ actual
    denominator = math.sqrt((total**2 - predicted @ predicted) * (total**2 - actual @ actual))
    return float(numerator / denominator) if denominator else 0.0


def pearson(labels, predictions) -> float:
    x, y = np.asarray(labels, dtype=float), np.asarray(predictions, dtype=float)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(values) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values)


def spearman(labels, predictions) -> float:
    return pearson(_ranks(labels), _ranks(predictions))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def compute(problem: str, labels, logits: np.ndarray) -> dict[str, float]:
    """All metrics of a classification or regression `problem`, plus the mean loss the trainer optimises."""
    logits = np.asarray(logits, dtype=np.float64)
    if problem == "regression":
        predictions = logits.reshape(-1)
        labels = np.asarray(labels, dtype=float)
        return {
            "pearson": pearson(labels, predictions),
            "spearman": spearman(labels, predictions),
            "mse": float(((labels - predictions) ** 2).mean()),
            "loss": float(((labels - predictions) ** 2).mean()),
        }
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = logits.shape[1]
    predictions = logits.argmax(axis=1)
    probabilities = softmax(logits)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": accuracy(labels, predictions),
        "macro_f1": macro_f1(labels, predictions, num_classes),
        "matthews": matthews(labels, predictions, num_classes),
        "loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
    }
