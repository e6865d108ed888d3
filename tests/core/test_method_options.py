"""Methods carry their own options: MethodSpec's fields, the `jrft train` flags, their validation, the app's
presets and the bench's cases all come from the registered methods' declarations, so a new method is its module
plus its registration (shown here with a method registered in a fresh process, without touching config or cli)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from jrft_desktop import cli
from jrft_desktop.core import methods
from jrft_desktop.core.config import MethodSpec, RunConfig, field_help, method_option_fields
from jrft_desktop.core.errors import UserError
from jrft_desktop.core.methods.base import Method
from jrft_desktop.core.methods.options import NoOptions, option, option_flag
from jrft_desktop.core.methods.lora import rank_option

# The flat shape of every stored MethodSpec (config.json, vector metadata): old files must keep reading.
STORED_FIELDS = {"name", "budget", "d", "position", "rank", "prompt_tokens", "projection_seed", "on_the_fly"}


def train_args(*extra: str):
    return cli.build_parser().parse_args(["train", "--data", "train.tsv", "--output", "run", *map(str, extra)])


def method_of(*extra: str) -> MethodSpec:
    return cli.config_from_args(train_args(*extra)).method


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test (which may register methods of its own)."""
    monkeypatch.setattr(methods.registry, "_REGISTRY", dict(methods.registry._REGISTRY))
    return methods


def test_method_spec_is_the_union_of_the_methods_options():
    union = {}
    for method in methods.all_methods():
        for item in dataclasses.fields(method.options):
            union.setdefault(item.name, item)
    spec_fields = {item.name: item for item in dataclasses.fields(MethodSpec)}
    assert list(spec_fields) == ["name", "budget", *union]
    assert set(spec_fields) == STORED_FIELDS
    for name, item in union.items():  # the declaration is the field: one help text, one default
        assert field_help(MethodSpec, name).startswith(item.metadata["help"])  # then a number's valid range
        assert spec_fields[name].default == item.default
    assert {item.name for item in method_option_fields() if item.metadata.get("size")} == {"d", "rank",
                                                                                            "prompt_tokens"}
    assert [(m.name, m.size_name) for m in methods.all_methods()] == [
        ("slash", "d"), ("jr-warp", "d"), ("head", None), ("bitfit", None), ("lora", "rank"), ("vera", "rank"),
        ("warp", "prompt_tokens"), ("full", None)]
    assert MethodSpec(name="vera").method_options() == ("rank", "projection_seed")
    assert MethodSpec(name="head").method_options() == ()


def test_old_run_folders_still_read_with_settings_their_method_ignored():
    # The app used to store every setting for every method (a LoRA run with SLaSh's position and a seed).
    stored = {"name": "lora", "budget": None, "d": None, "position": "attention", "rank": 4, "prompt_tokens": None,
              "projection_seed": 5, "on_the_fly": False}
    config = RunConfig.from_dict({"method": stored})
    assert dataclasses.asdict(config.method) == stored
    assert RunConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["method"] == stored  # the same flat shape written back


def test_the_spec_refuses_unknown_methods_and_choices():
    with pytest.raises(UserError, match="Unknown method 'lroa'. Did you mean 'lora'"):
        MethodSpec(name="lroa")
    with pytest.raises(UserError, match="position must be one of auto, attention, intermediate, output .got 'middle'"):
        MethodSpec(position="middle")
    with pytest.raises(UserError, match="config.method has unknown setting"):
        RunConfig.from_dict({"method": {"name": "slash", "alpha": 1}})


def test_train_flags_come_from_the_options():
    parser = cli.build_parser()
    train = next(action for action in parser._subparsers._group_actions[0].choices["train"]._actions
                 if "--d" in action.option_strings)
    assert train.option_strings == ["--d", "--vector-size"] and train.help == field_help(MethodSpec, "d")
    flags = {option_flag(item): item.name for item in method_option_fields()}
    assert flags == {"--d": "d", "--position": "position", "--projection-seed": "projection_seed",
                     "--on-the-fly": "on_the_fly", "--rank": "rank", "--prompt-tokens": "prompt_tokens"}
    spec = method_of("--method", "slash", "--vector-size", 64, "--position", "attention", "--projection-seed", 3,
                     "--on-the-fly")
    assert (spec.d, spec.position, spec.projection_seed, spec.on_the_fly) == (64, "attention", 3, True)
    assert method_of("--method", "vera", "--rank", 4, "--projection-seed", 2).rank == 4
    assert method_of("--method", "warp", "--prompt-tokens", 3).prompt_tokens == 3


@pytest.mark.parametrize("size", [["--d", "64"], ["--rank", "2"], ["--prompt-tokens", "2"]])
def test_budget_excludes_every_size(size, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_args("--budget", 64, *size)
    assert exit_.value.code == cli.USER_ERROR_STATUS
    assert re.search(f"argument {size[0]}(/[-a-z]+)?: not allowed with argument --budget", capsys.readouterr().err)


@pytest.mark.parametrize(("flags", "message"), [
    (["--method", "slash", "--rank", "4"],
     "--rank does not apply to slash (its options: --d, --position, --projection-seed, --on-the-fly)."),
    (["--method", "lora", "--position", "output"], "--position does not apply to lora (its options: --rank)."),
    (["--method", "head", "--d", "8"], "--d does not apply to head (it has no options)."),
    (["--method", "jr-warp", "--position", "attention"], "--position does not apply to jr-warp"),
    (["--on-the-fly", "--method", "vera"], "--on-the-fly does not apply to vera"),
])
def test_an_option_the_method_does_not_read_is_refused(flags, message, tmp_path, capsys):
    with pytest.raises(UserError) as error:
        method_of(*flags)
    assert str(error.value).startswith(message)
    status = cli.main(["train", "--data", str(tmp_path / "none.tsv"), "--output", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert status == cli.USER_ERROR_STATUS and err.count("\n") == 1 and err.startswith(f"error: {message}")
    assert not (tmp_path / "run").exists()


def test_presets_and_bench_cases_are_the_methods_own():
    presets = methods.presets()
    assert presets[0].label == "SLaSh d=1024 (paper)" and presets[0].spec() == MethodSpec(name="slash", d=1024)
    assert {p.label for p in presets} >= {"LoRA r=8", "JR-WARP d=1024 (paper)", "WARP, 8 prompt tokens",
                                          "BitFit", "Linear head only", "Full finetuning", "VeRA r=256"}
    for preset in presets:
        assert set(preset.values) <= set(methods.get_method(preset.method).option_names), preset
    assert MethodSpec(name="warp").method_options() == ("prompt_tokens", "projection_seed")
    assert next(p for p in presets if p.label == "BitFit").spec() == MethodSpec(name="bitfit")

    from jrft_desktop.core import bench

    cases = bench.default_cases(300)
    assert [case.label for case in cases] == [
        "slash-output", "slash-intermediate", "slash-attention", "jr-warp", "head", "bitfit", "lora", "lora-r8",
        "vera", "warp", "full"]
    assert cases[2].method == MethodSpec(name="slash", budget=300, position="attention")
    assert cases[7].method == MethodSpec(name="lora", rank=8) and cases[4].method == MethodSpec(name="head")
    assert bench.QUICK_LABELS == bench.quick_labels() == (
        "slash-output", "jr-warp", "head", "bitfit", "lora", "vera", "warp", "full")
    settings = bench.quick_settings(None, None, ())
    assert bench.curve_method().name == "slash"
    assert bench.curve_case(settings, 64) == bench.BenchCase(
        "slash-output-d64", MethodSpec(name="slash", d=64, position="output"))


def test_a_late_method_reusing_options_gets_their_flags_and_checks(registry):
    @dataclasses.dataclass(frozen=True)
    class Options:
        rank: int | None = rank_option()  # LoRA's and VeRA's rank, shared

    class Tiny(Method):
        name, summary, options, default_size = "tiny-rank", "Tiny: a test method.", Options, 2

    registry.register(Tiny())
    assert method_of("--method", "tiny-rank", "--rank", 3).rank == 3
    with pytest.raises(UserError, match="--d does not apply to tiny-rank .its options: --rank"):
        method_of("--method", "tiny-rank", "--d", 3)

    from jrft_desktop.core import bench

    assert [case.label for case in bench.default_cases()][-1] == "tiny-rank"  # at the budget, by default
    assert bench.default_cases(77)[-1].method == MethodSpec(name="tiny-rank", budget=77)


def test_a_method_must_declare_its_options_consistently(registry):
    @dataclasses.dataclass(frozen=True)
    class Other:
        rank: int | None = dataclasses.field(default=None, metadata=option("Another rank.", size=True, minimum=1))

    @dataclasses.dataclass(frozen=True)
    class New:
        alpha: float = dataclasses.field(default=1.0, metadata=option("A new setting.", minimum=0))

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        beta: int = 0

    @dataclasses.dataclass(frozen=True)
    class Unbounded:
        gamma: int = dataclasses.field(default=2, metadata=option("A number without a range."))

    def method(name, options, size=None):
        return type(name, (Method,), {"name": name, "options": options, "default_size": size})()

    with pytest.raises(TypeError, match="option 'rank' differs from its declaration in methods/options.py"):
        registry.register(method("other", Other, 4))
    with pytest.raises(TypeError, match="option 'alpha' is not a MethodSpec field: declare it in methods/options.py"):
        registry.register(method("new", New))
    with pytest.raises(TypeError, match="option 'beta' needs a default and metadata=option"):
        registry.register(method("bare", Undocumented))
    with pytest.raises(TypeError, match="option 'gamma' is a number: declare its valid range"):
        registry.register(method("unbounded", Unbounded))
    with pytest.raises(TypeError, match="needs one size option .* and a default_size"):
        registry.register(method("unsized", NoOptions, 8))
    assert [m.name for m in registry.all_methods()][-1] == "full"


NEW_METHOD = textwrap.dedent('''
    import dataclasses, json, sys

    from jrft_desktop.core import methods
    from jrft_desktop.core.methods.base import Method, Preset
    from jrft_desktop.core.methods.options import projection_seed_option, rank_option

    @dataclasses.dataclass(frozen=True)
    class ScaleOptions:  # options declared once (methods/options.py) and typed in MethodSpec, reused
        rank: int | None = rank_option()
        projection_seed: int = projection_seed_option()

    class Scale(Method):
        name = "scale"
        summary = "Scale: a toy method with options of its own."
        options = ScaleOptions
        default_size = 2
        presets = (Preset("Scale rank 3", {"rank": 3, "projection_seed": 7}),)

    methods.register(Scale())  # its module's registration

    from jrft_desktop import cli  # neither the config nor the parser knows the toy method by name
    from jrft_desktop.core.config import MethodSpec, RunConfig, field_help
    from jrft_desktop.core.errors import UserError

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--data", "x", "--output", "o", "--method", "scale", "--rank", "5",
                              "--projection-seed", "4"])
    spec = cli.config_from_args(args).method
    refused = []
    for flags in (["--method", "slash", "--rank", "2"], ["--method", "scale", "--d", "2"]):
        try:
            cli.config_from_args(parser.parse_args(["train", "--data", "x", "--output", "o", *flags]))
        except UserError as error:
            refused.append(str(error))
    for values in ({"position": "middle"}, {"rank": -1}):
        try:
            MethodSpec(name="scale", **values)
        except UserError as error:
            refused.append(str(error))
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    print(json.dumps({
        "spec": dataclasses.asdict(spec), "refused": refused,
        "in_help": "--rank" in help_text and "Rank of lora" in " ".join(help_text.split()),
        "round_trip": RunConfig.from_json(RunConfig(method=spec).to_json()).method == spec,
        "preset": dataclasses.asdict(methods.presets()[-1].spec()),
        "reads": MethodSpec(name="scale").method_options(),
        "torch": "torch" in sys.modules,
    }))
''')


def test_a_new_method_is_its_module_plus_its_registration(tmp_path):
    done = subprocess.run([sys.executable, "-c", NEW_METHOD], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JRFT_HOME": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["spec"]["name"] == "scale" and (found["spec"]["rank"], found["spec"]["projection_seed"]) == (5, 4)
    assert found["refused"] == [
        "--rank does not apply to slash (its options: --d, --position, --projection-seed, --on-the-fly).",
        "--d does not apply to scale (its options: --rank, --projection-seed).",
        "The method's position must be one of auto, attention, intermediate, output (got 'middle').",
        "rank must be a positive whole number (got -1)."]  # its declared range, checked like every other
    assert found["in_help"] and found["round_trip"]
    assert found["reads"] == ["rank", "projection_seed"]
    assert (found["preset"]["name"], found["preset"]["rank"], found["preset"]["projection_seed"]) == ("scale", 3, 7)
    assert not found["torch"]  # the registry, the config and the parser load without torch


def test_the_method_page_takes_its_presets_from_the_registry_without_torch():
    script = ("import sys\nfrom jrft_desktop.gui.pages import method_page\n"
              "print([p.label for p in method_page.PRESETS][:3], 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['SLaSh d=1024 (paper)', 'SLaSh d=4096', 'JR-WARP d=1024 (paper)'] False"
