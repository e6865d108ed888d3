"""The finetuning methods, each in its own module, registered by name (`registry`).

Each method declares the options it reads (a frozen dataclass of fields declared in `options.py`), which are the
fields of the typed `spec.MethodSpec`; the `jrft train` flags and the app's controls are made from them. Its
presets (the app) and bench cases (`jrft bench`) are declared with it, so a new method is its module plus its line
in the imports below (and its option in options.py and spec.py if it brings a new one). Importing this package
needs no torch; `core.build.build_model` applies a method to a model."""

from __future__ import annotations

# Registered as imported: the order users see, and the first is the default method.
# isort: off
from . import slash, jr_warp, head, bitfit, lora, vera, warp, full  # noqa: F401
# isort: on
from .base import Adaptation, Method, MethodPlan, Preset
from .registry import all_methods, base_model_method, get_method, presets, reference_method, refuse_unread, register
from .spec import MethodSpec, option_fields

__all__ = ["Adaptation", "Method", "MethodPlan", "MethodSpec", "Preset", "all_methods", "base_model_method",
           "get_method", "option_fields", "presets", "reference_method", "refuse_unread", "register"]
