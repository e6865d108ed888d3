"""Every numeric setting of the run configuration has its valid range declared once (in its field's metadata),
shown in its help, and checked when a config is made: a value outside it is refused with one line, from a
`--config` file (RunConfig.from_dict), a constructor or `dataclasses.replace` alike."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest

from jrft_desktop.core import methods, ranges
from jrft_desktop.core.config import (DataSpec, MethodSpec, Privacy, RunConfig, TrainingSpec, field_bounds,
                                      field_help, setting_problem)
from jrft_desktop.core.errors import DataError, PrivacyError, UserError

SECTIONS = {"data": DataSpec, "method": MethodSpec, "training": TrainingSpec, "privacy": Privacy}
ERRORS = {"data": DataError, "privacy": PrivacyError}  # a refusal is also of its section's error type


def _kind(cls: type, name: str) -> type | None:
    hint = typing.get_type_hints(cls)[name]
    plain = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return plain[0] if plain[0] in (int, float) else None


NUMERIC = [(section, f.name, _kind(cls, f.name)) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
           if _kind(cls, f.name)]


def _outside(metadata: dict, kind: type) -> list:
    """Values just outside the declared range, and values of the wrong kind."""
    values = ["fast", True, [1]]
    if kind is int:
        values.append(2.5)
    else:
        values += [math.nan, math.inf, -math.inf]
    if "minimum" in metadata:
        low = metadata["minimum"]
        values.append(low if metadata.get("exclusive_minimum") else low - (1 if kind is int else 1e-9))
    if "maximum" in metadata:
        high = metadata["maximum"]
        values.append(high if metadata.get("exclusive_maximum") else high + (1 if kind is int else 1e-9))
    return values


def _inside(metadata: dict, kind: type) -> list:
    """The bounds themselves where included, just inside them where excluded."""
    step = 1 if kind is int else 1e-6
    values = []
    for key, sign in (("minimum", 1), ("maximum", -1)):
        if key in metadata:
            values.append(metadata[key] + (sign * step if metadata.get(f"exclusive_{key}") else 0))
    return values


def _metadata(section: str, name: str) -> dict:
    return dict(next(f.metadata for f in dataclasses.fields(SECTIONS[section]) if f.name == name))


def test_the_whole_class_is_covered():
    found = {(section, name) for section, name, _ in NUMERIC}
    assert {("training", "lr"), ("training", "batch_size"), ("training", "eval_every"),
            ("training", "checkpoint_every"), ("training", "weight_decay"), ("training", "warmup_ratio"),
            ("training", "seed"), ("training", "epochs"), ("training", "max_steps"), ("data", "max_length"),
            ("data", "validation_fraction"), ("method", "d"), ("method", "rank"), ("method", "budget"),
            ("privacy", "epsilon"), ("privacy", "delta"), ("privacy", "max_grad_norm")} <= found
    for section, name, _ in NUMERIC:
        assert {"minimum", "maximum"} & set(_metadata(section, name)), f"{section}.{name} declares no range"


@pytest.mark.parametrize(("section", "name", "kind"), NUMERIC, ids=[f"{s}.{n}" for s, n, _ in NUMERIC])
def test_out_of_range_is_refused_in_one_line(section, name, kind):
    metadata = _metadata(section, name)
    called = metadata.get("called", name)
    for value in _outside(metadata, kind):
        with pytest.raises(ERRORS.get(section, UserError)) as raised:
            RunConfig.from_dict({section: {name: value}})
        message = str(raised.value)
        assert "\n" not in message and message.startswith(f"{called} must be "), message
        assert message == setting_problem(SECTIONS[section], name, value)
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        assert f"(got {shown})" in message, message
        with pytest.raises(UserError):  # made in code, or changed from a valid config, the same
            dataclasses.replace(SECTIONS[section](), **{name: value})
    for value in _inside(metadata, kind):
        config = RunConfig.from_dict({section: {name: value}})
        assert getattr(getattr(config, section), name) == value
        assert setting_problem(SECTIONS[section], name, value) is None
    assert setting_problem(SECTIONS[section], name, None) is None  # empty: the default


@pytest.mark.parametrize(("section", "name", "kind"), NUMERIC, ids=[f"{s}.{n}" for s, n, _ in NUMERIC])
def test_the_help_shows_the_range(section, name, kind):
    text = field_help(SECTIONS[section], name)
    sentence = ranges.describe(SECTIONS[section], name)
    assert sentence.startswith("Must be ") and text.endswith(" " + sentence)
    assert ranges.phrase(_metadata(section, name), kind) in text


@pytest.mark.parametrize(("settings", "message"), [
    ({"training": {"lr": -0.01}},
     "The learning rate must be a positive number (got -0.01); leave it unset for the method's default."),
    ({"training": {"lr": 0}}, "The learning rate must be a positive number (got 0); leave it unset for the method's "
                              "default."),
    ({"training": {"lr": math.nan}}, "The learning rate must be a positive number (got nan)"),
    ({"training": {"lr": math.inf}}, "The learning rate must be a positive number, not infinite (got inf)"),
    ({"training": {"lr": "fast"}}, "The learning rate must be a positive number (got 'fast')"),
    ({"training": {"batch_size": 0}}, "batch_size must be at least 1 (got 0)."),
    ({"training": {"batch_size": 8.5}}, "batch_size must be a whole number, at least 1 (got 8.5)."),
    ({"training": {"eval_every": 0}}, "eval_every must be at least 1 (got 0)."),
    ({"training": {"checkpoint_every": 0}}, "checkpoint_every must be at least 1 (got 0)."),
    ({"training": {"weight_decay": -0.1}}, "weight_decay must be at least 0 (got -0.1)."),
    ({"training": {"warmup_ratio": -0.1}}, "warmup_ratio must be between 0 and 1 (got -0.1)."),
    ({"training": {"seed": -1}}, "seed must be a whole number between 0 and 4,294,967,295 (got -1)."),
    ({"data": {"validation_fraction": 1.0}}, "validation_fraction must be between 0 and 1, both excluded (got 1.0)."),
    ({"data": {"max_length": 0}}, "max_length must be at least 8 (got 0)."),
    ({"method": {"d": 0}}, "d must be a positive whole number (got 0)."),
    ({"method": {"name": "lora", "rank": -8}}, "rank must be a positive whole number (got -8)."),
    ({"privacy": {"epsilon": 0.0}},
     "ε must be a positive number (got 0.0); smaller is more private, 1 to 8 is common."),
    ({"privacy": {"delta": 1.0}}, "δ must be between 0 and 1, both excluded (got 1.0)"),
    ({"privacy": {"epsilon": 3.0, "max_grad_norm": 0.0}}, "The clipping norm C must be a positive number (got 0.0); "
                                                          "1.0 is a good start."),
], ids=lambda value: None if isinstance(value, str) else "-".join(f"{name}={v}" for part in value.values()
                                                                   for name, v in part.items()))
def test_the_named_cases(settings, message):
    with pytest.raises(UserError) as raised:
        RunConfig.from_json(json.dumps(settings))  # as a --config file holds them (NaN too)
    assert message in str(raised.value)


def test_the_range_error_is_the_section_s_error():
    with pytest.raises(DataError, match="max_validation_rows must be at least 1"):
        DataSpec(max_validation_rows=0)
    with pytest.raises(PrivacyError, match=r"ε must be a positive number \(got 0.0\)"):
        Privacy(epsilon=0.0)
    with pytest.raises(UserError, match="budget must be a positive whole number"):
        MethodSpec(name="jr-warp", budget=0)


def test_number_boxes_offer_the_valid_range():
    assert field_bounds(TrainingSpec, "batch_size", ceiling=65_536) == (1, 65_536)
    assert field_bounds(MethodSpec, "d", ceiling=1_000_000) == (1, 1_000_000)  # an excluded 0: from 1
    assert field_bounds(Privacy, "epsilon", 0.01, ceiling=1000) == (0.01, 1000)
    assert field_bounds(TrainingSpec, "warmup_ratio", 0.001, ceiling=0.9) == (0, 0.9)  # the box's own cap
    low, high = field_bounds(DataSpec, "validation_fraction", 0.01)
    assert (low, high) == pytest.approx((0.01, 0.99))
    assert field_bounds(TrainingSpec, "seed", ceiling=2**31 - 1) == (0, 2**31 - 1)


def test_a_numeric_method_option_must_declare_its_range():
    @dataclasses.dataclass(frozen=True)
    class Options:
        width: int = dataclasses.field(default=4, metadata=methods.options.option("How wide."))

    class Unbounded(methods.Method):
        name, options = "unbounded-test", Options

    with pytest.raises(TypeError, match="'width' is a number: declare its valid range"):
        methods.register(Unbounded())
    assert "unbounded-test" not in [method.name for method in methods.all_methods()]
