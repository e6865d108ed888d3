"""The settings a method reads, declared once each: their help (`jrft train --help`, the app's tooltips), flag,
label, choices and valid range. `spec.MethodSpec` is made of these fields; each method's options dataclass lists
the ones it reads. Importing this module needs no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ranges import SEED_MAX, between

POSITIONS = ("attention", "intermediate", "output")  # where SLaSh adds its shift in every layer
AUTO_POSITION = "auto"  # the position measured best for the run's task (Method.position_for)


def option(help: str, *, size: bool = False, cli: str | None = None, aliases: tuple[str, ...] = (),
           choices: tuple | None = None, label: str | None = None, box_maximum: int | None = None,
           **valid: Any) -> dict[str, Any]:
    """The metadata of one option field. `help` is its only explanation (`jrft train --help`, the app's tooltip);
    `size`: it sizes the method (a budget sets it instead: `--budget` excludes its flag; at most one per method);
    `cli` its flag (default: --the-name-with-dashes) and `aliases` more flags; `choices` the values it takes; `label`
    its name in the app (a checkbox's text for a bool); `box_maximum` the largest value the app's box offers where
    the valid range has no top; `valid` a number's valid range (`ranges.between`: minimum=..., maximum=...,
    exclusive_minimum=True, ...), checked whenever a MethodSpec is made and shown in the help."""
    extra = {"size": size, "cli": cli, "aliases": tuple(aliases), "choices": choices, "label": label,
             "box_maximum": box_maximum}
    return {"help": help, **{key: value for key, value in extra.items() if value}, **between(**valid)}


def option_flag(option_field) -> str:
    return option_field.metadata.get("cli") or "--" + option_field.name.replace("_", "-")


def vector_size_option():
    # torchrun's own parser reads `--d` as an abbreviation of its --duplicate-* options, even after the command:
    # `--vector-size` says the same under torchrun.
    return field(default=None, metadata=option(
        "Size of the trainable vector z for slash / jr-warp (default 1024).", size=True, cli="--d",
        aliases=("--vector-size",), label="d (size of the vector z)", box_maximum=1_000_000, minimum=0,
        exclusive_minimum=True))


def position_option():
    return field(default=AUTO_POSITION, metadata=option(
        "Where SLaSh adds its shift in every layer: 'attention' (attention block output), 'intermediate' "
        "(MLP up-projection, before the activation), 'output' (MLP output, before the residual add), or 'auto' (the "
        "position measured best for the task: docs/benchmarks.md).", choices=(AUTO_POSITION, *POSITIONS),
        label="Position"))


def projection_seed_option():
    return field(default=0, metadata=option(
        "Seed of the method's fixed random draws (the projections W_l of slash and jr-warp, VeRA's shared matrices, "
        "WARP's first prompt tokens); recorded in every export.", label="Projection seed", minimum=0,
        maximum=SEED_MAX))


def on_the_fly_option():
    return field(default=False, metadata=option(
        "Regenerate each projection in forward and backward instead of keeping them in memory (slower, for big "
        "models).", label="Regenerate projections on the fly (less memory, slower)"))


def rank_option():
    return field(default=None, metadata=option("Rank of lora (default 8) or vera (default 256).", size=True,
                                               label="Rank", box_maximum=65_536, minimum=0,
                                               exclusive_minimum=True))


def prompt_tokens_option():
    return field(default=None, metadata=option(
        "Number of trainable prompt tokens for warp (default 8).", size=True, label="Prompt tokens",
        box_maximum=4096, minimum=0, exclusive_minimum=True))


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that reads nothing but its name (and ignores a budget)."""


@dataclass(frozen=True)
class ProjectionOptions:
    d: int | None = vector_size_option()
    projection_seed: int = projection_seed_option()
    on_the_fly: bool = on_the_fly_option()


# Every option, in the order MethodSpec, the CLI and the app show them: a method's options dataclass may only use
# these declarations (methods.registry.register checks it), and spec.MethodSpec is made of the same ones.
DECLARED: dict[str, Any] = {"d": vector_size_option(), "position": position_option(),
                            "projection_seed": projection_seed_option(), "on_the_fly": on_the_fly_option(),
                            "rank": rank_option(), "prompt_tokens": prompt_tokens_option()}
