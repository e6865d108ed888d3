"""MethodSpec: the method's name, its budget and the options of every method, as one typed, flat record (so that
config.json and vector files keep one shape whatever the method). Each option is declared once, in `options.py`;
a method's options dataclass names the fields it reads, and an option the chosen method does not read is ignored
(the CLI and the app never set one). A method that brings a new option adds its field here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .. import ranges
from ..errors import UserError
from .options import (
    on_the_fly_option,
    option,
    position_option,
    projection_seed_option,
    prompt_tokens_option,
    rank_option,
    vector_size_option,
)

OWN_FIELDS = ("name", "budget")  # MethodSpec's fields that are not a method's options


@dataclass(frozen=True)
class MethodSpec:
    name: str = field(default="slash", metadata=option("Finetuning method (see `jrft methods`)."))
    budget: int | None = field(default=None, metadata=option(
        "Trainable parameters the method may use, not counting the head: sets d for slash/jr-warp, rank for "
        "lora/vera, prompt_tokens for warp.", minimum=0, exclusive_minimum=True))
    d: int | None = vector_size_option()
    position: str = position_option()
    projection_seed: int = projection_seed_option()
    on_the_fly: bool = on_the_fly_option()
    rank: int | None = rank_option()
    prompt_tokens: int | None = prompt_tokens_option()

    def __post_init__(self):
        from .registry import get_method

        get_method(self.name)  # an unknown name is refused with the nearest known one
        ranges.check(self)
        for option_field in dataclasses.fields(self):
            choices, value = option_field.metadata.get("choices"), getattr(self, option_field.name)
            if choices and value is not None and value not in choices:
                raise UserError(f"The method's {option_field.name} must be one of {', '.join(map(str, choices))} "
                                f"(got {value!r}).")

    def method_options(self) -> tuple[str, ...]:
        """The options the chosen method reads (it ignores the others)."""
        from .registry import get_method

        return get_method(self.name).option_names


def option_fields() -> tuple[dataclasses.Field, ...]:
    """MethodSpec's option fields (all but the name and the budget); `metadata["size"]` marks the methods' sizes."""
    return tuple(option_field for option_field in dataclasses.fields(MethodSpec)
                 if option_field.name not in OWN_FIELDS)
