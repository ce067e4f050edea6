"""The contract every `python -m ...` entry point keeps (README, "What runs where"):

- `--help` works and shows the default of every option that has one;
- a bad argument (wrong type, out-of-range count, missing path) gives exactly one `error:` line
  on stderr, a non-zero exit and no traceback, before any model is loaded.

Everything runs in-process through each module's `main(argv)`. The functions that start real
work (loading a model, training, timing a bench) are replaced by a stub that fails the test, so a
missing check shows up as a failure here instead of as a long run. Nothing is loaded or compiled.
"""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

CLIS = (
    "convert.wan",
    "convert.inspect",
    "convert.export",
    "wanjax.sample",
    "wanjax.memory",
    "wanjax.demo",
    "wanjax.text.build_cache",
    "train.dmd",
    "train.memory",
    "train.calibrate",
    "train.evaluate",
    "train.demo",
    "train.dmd_report",
    "train.toy.teacher",
    "train.toy.classifier",
    "train.toy.evaluate",
    "bench.sample",
    "bench.dit_forward",
    "bench.kernels",
    "bench.quantize",
    "bench.vae_decode",
    "bench.run_all",
    "bench.convert",
    "bench.kernels_interpret",
    "bench.memory",
)

# module -> attributes ("module:attr.attr") that start real work; a bad argument must be
# rejected before any of them runs.
WORK = {
    "convert.wan": ["huggingface_hub:snapshot_download"],
    "wanjax.sample": ["wanjax.sample:load_pipeline"],
    "wanjax.demo": ["wanjax.demo:WanDiT", "wanjax.demo:make_sampler"],
    "wanjax.text.build_cache": ["wanjax:load_text_encoder"],
    "train.dmd": ["train.dmd:load_networks", "train.dmd:StageRunner"],
    "train.calibrate": ["train.calibration.setup:load_student"],
    "train.evaluate": ["train.calibration.setup:load_student"],
    "train.demo": ["train.demo:load_teacher"],
    "train.dmd_report": ["train.dmd_report:load_teacher", "train.dmd_report:train_student"],
    "train.toy.teacher": ["train.toy.teacher:train_teacher"],
    "train.toy.classifier": ["train.toy.classifier:train_classifier"],
    "train.toy.evaluate": ["train.toy.evaluate:eval_prompts", "train.toy.evaluate:teacher_rows"],
    "bench.sample": ["bench.sample:bench"],
    "bench.dit_forward": ["bench.dit_forward:bench_config"],
    "bench.kernels": ["bench.kernels:bench_shape"],
    "bench.quantize": ["bench.quantize:bench_case"],
    "bench.vae_decode": ["bench.vae_decode:analyse", "bench.vae_decode:measure",
                         "bench.vae_decode:measure_child"],
    "bench.run_all": ["bench.run_all:run_bench", "bench.run_all:probe_environment"],
    "bench.convert": ["bench.convert:run"],
}


def _xfail(reason: str):
    return pytest.mark.xfail(reason=reason, strict=True)


# CLIs under train/ that do not keep the contract yet (train/ is edited by its owner).
HELP_XFAIL: dict[str, str] = {}

MISSING = "{tmp}/missing"  # "{tmp}" becomes the test's temp folder


def case(module: str, argv: list[str], message: str | None, xfail: str | None = None):
    """One bad command line; `message`: text the error line must contain (None: any)."""
    name = " ".join([module, *argv]).replace(MISSING, "MISSING").replace("{tmp}", "TMP")
    return pytest.param(module, argv, message, id=name, marks=_xfail(xfail) if xfail else ())


BAD = [
    case("convert.wan", [], "required"),
    case("convert.wan", [MISSING, "{tmp}/dst"], "does not exist"),
    case("convert.wan", ["--dtype", "fp8", "a", "b"], "--dtype"),
    case("convert.inspect", [MISSING], "does not exist"),
    case("convert.inspect", ["--layout", "other", "x"], "--layout"),
    case("convert.export", [MISSING, "{tmp}/dst"], "not a wanjax checkpoint"),
    case("convert.export", ["--max-shard-size", "abc", "a", "b"], "--max-shard-size"),
    case("convert.export", ["--max-shard-size", "0", "a", "b"], "--max-shard-size"),
    case("wanjax.sample", ["--frames", "x"], "--frames"),
    case("wanjax.sample", ["--frames", "6", "--checkpoint", MISSING], "4n+1"),
    case("wanjax.sample", ["--steps", "0", "--checkpoint", MISSING], "--steps"),
    case("wanjax.sample", ["--batch-size", "-1", "--checkpoint", MISSING], "--batch-size"),
    case("wanjax.sample", ["--checkpoint", MISSING, "--prompt", "x", "--out", "{tmp}/o"],
         "not found"),
    case("wanjax.memory", ["--frames", "6"], "--frames"),
    case("wanjax.memory", ["--size", "abc"], "--size"),
    case("wanjax.memory", ["--devices", "0"], "--devices"),
    case("wanjax.memory", ["--mesh", "bogus=2"], "mesh"),
    case("wanjax.memory", ["--config", "nope"], "preset"),
    case("wanjax.demo", ["--frames", "6", "--out", "{tmp}"], "--frames"),
    case("wanjax.demo", ["--size", "x"], "--size"),
    case("wanjax.demo", ["--steps", "0", "--out", "{tmp}"], "--steps"),
    case("wanjax.text.build_cache", [], "required"),
    case("wanjax.text.build_cache", ["--checkpoint", MISSING, "--prompts-file", MISSING,
                                     "--out", "{tmp}/c"], "not found"),
    case("wanjax.text.build_cache", ["--checkpoint", "a", "--prompts-file", "b", "--out", "c",
                                     "--batch-size", "0"], "--batch-size"),
    case("train.dmd", ["--iterations", "x"], "--iterations"),
    case("train.dmd", ["--iterations", "0", "--out", "{tmp}"], "iterations"),
    case("train.dmd", ["--preset", "a14b", "--out", "{tmp}"], "--teacher"),
    case("train.dmd", ["--preset", "a14b", "--teacher", MISSING, "--out", "{tmp}"],
         "--text-cache"),
    case("train.dmd", ["--preset", "a14b", "--teacher", MISSING, "--text-cache", MISSING,
                       "--out", "{tmp}"], "text-embedding cache"),
    case("train.dmd", ["--num-processes", "0"], "--num-processes"),
    case("train.dmd", ["--log-every", "0", "--teacher", MISSING, "--out", "{tmp}"],
         "--log-every"),
    case("train.dmd", ["--mesh", "bogus", "--teacher", MISSING, "--out", "{tmp}"], "mesh"),
    case("train.dmd", ["--regression-weight", "-0.5", "--out", "{tmp}"], "--regression-weight"),
    case("train.dmd", ["--regression-pairs", "0", "--out", "{tmp}"], "--regression-pairs"),
    case("train.dmd", ["--gan-weight", "-1", "--out", "{tmp}"], "--gan-weight"),
    case("train.dmd", ["--noise-shift", "0", "--out", "{tmp}"], "--noise-shift"),
    case("train.dmd", ["--gan-noise-shift", "0", "--out", "{tmp}"], "--gan-noise-shift"),
    case("train.dmd", ["--gan-reversed-weight", "-1", "--out", "{tmp}"], "--gan-reversed-weight"),
    case("train.dmd", ["--gan-weight", "1", "--gan-stages", "mid", "--out", "{tmp}"], "gan_stages"),
    case("train.dmd", ["--gan-stages", "low", "--out", "{tmp}"], "--gan-weight"),
    case("train.dmd", ["--gan-real", "data", "--gan-reversed-weight", "1", "--out", "{tmp}"],
         "--gan-weight"),
    case("train.memory", ["--layout", "bogus"], "--layout"),
    case("train.memory", ["--size", "1080p"], "--size"),
    case("train.memory", ["--gan-reversed"], "--gan"),
    case("train.calibrate", [], "--out"),
    case("train.calibrate", ["--out", "{tmp}/o", "--protect-k", "x"], "--protect-k"),
    case("train.calibrate", ["--out", "{tmp}/o", "--student", MISSING],
         "not a wanjax checkpoint"),
    case("train.calibrate", ["--out", "{tmp}/o", "--num-prompts", "0", "--student", MISSING],
         "--num-prompts"),
    case("train.evaluate", ["--repeats", "0"], "--repeats"),
    case("train.evaluate", ["--teacher-steps", "x"], "--teacher-steps"),
    case("train.evaluate", ["--student", MISSING, "--out", "{tmp}/o"],
         "not a wanjax checkpoint"),
    case("train.evaluate", ["--teacher-steps", "0", "--student", MISSING, "--out", "{tmp}/o"],
         "--teacher-steps"),
    case("train.demo", ["--iterations", "0", "--out", "{tmp}"], "--iterations"),
    case("train.demo", ["--seed", "x"], "--seed"),
    case("train.dmd_report", ["--per-prompt", "1", "--out", "{tmp}"], "--per-prompt"),
    case("train.dmd_report", ["--seed", "x"], "--seed"),
    case("train.dmd_report", ["--iterations", "0", "--out", "{tmp}"], "--iterations"),
    case("train.dmd_report", ["--iterations", "100,200", "--out", "{tmp}"], "--iterations"),
    case("train.dmd_report", ["--regression-weight", "nan", "--out", "{tmp}"],
         "--regression-weight"),
    case("train.dmd_report", ["--gan-students", "3", "--out", "{tmp}"], "--gan-students"),
    case("train.dmd_report", ["--noise-shift", "-1", "--out", "{tmp}"], "--noise-shift"),
    case("train.dmd_report", ["--gan-noise-shift", "0", "--out", "{tmp}"], "--gan-noise-shift"),
    case("train.dmd_report", ["--gan-reversed-weight", "x", "--out", "{tmp}"],
         "--gan-reversed-weight"),
    case("train.dmd_report", ["--gan-real", "pixels", "--out", "{tmp}"], "--gan-real"),
    case("train.dmd_report", ["--gan-stages", "mid", "--out", "{tmp}"], "--gan-stages"),
    case("train.toy.teacher", [], "--out"),
    case("train.toy.teacher", ["--out", "{tmp}/t", "--steps", "0"], "--steps"),
    case("train.toy.classifier", ["--out", "{tmp}/c", "--steps", "0"], "--steps"),
    case("train.toy.classifier", ["--out", "{tmp}/c", "--batch-size", "x"], "--batch-size"),
    case("train.toy.evaluate", ["--per-prompt", "1"], "--per-prompt"),
    case("train.toy.evaluate", ["--teacher", MISSING], "not a wanjax checkpoint"),
    case("bench.sample", ["--steps", "0"], "--steps"),
    case("bench.sample", ["--steps", "x"], "--steps"),
    case("bench.dit_forward", ["--repeats", "0"], "--repeats"),
    case("bench.dit_forward", ["--threads", "-1"], "--threads"),
    case("bench.kernels", ["--repeats", "0"], "--repeats"),
    case("bench.kernels", ["--k", "0"], "--k"),
    case("bench.quantize", ["--repeats", "0"], "--repeats"),
    case("bench.quantize", ["--threads", "x"], "--threads"),
    case("bench.vae_decode", ["--child", "0"], "--child"),
    case("bench.vae_decode", ["--unknown"], "unrecognized"),
    case("bench.run_all", ["--only", "no_such_bench"], "--only"),
    case("bench.run_all", ["--unknown"], "unrecognized"),
    case("bench.convert", ["--size-gb", "-1"], "--size-gb"),
    case("bench.convert", ["--dtype", "fp8"], "--dtype"),
]


class WorkStarted(Exception):
    """Raised by the stubs of WORK: the command went on past its argument checks."""


def _stub_work(module: str, monkeypatch) -> None:
    for spec in WORK.get(module, ()):
        owner_name, attr = spec.split(":")
        owner = importlib.import_module(owner_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)

        def started(*args, _spec=spec, **kwargs):
            raise WorkStarted(_spec)

        monkeypatch.setattr(owner, name, started)


def _exit_code(main, argv) -> int:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return 0 if code is None else code if isinstance(code, int) else 1


def _parser_and_help(module: str, monkeypatch, capsys):
    """The parser `main` builds (caught at its parse_args) and what `--help` printed."""
    parsers = []
    parse_args = argparse.ArgumentParser.parse_args

    def spy(self, args=None, namespace=None):
        parsers.append(self)
        return parse_args(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", spy)
    mod = importlib.import_module(module)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code in (0, None)
    assert parsers, f"{module}.main did not parse its arguments with argparse"
    return parsers[0], capsys.readouterr().out


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _no_default(action: argparse.Action) -> bool:
    if not action.option_strings or action.help == argparse.SUPPRESS:
        return True
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                           argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return True
    default = action.default
    return default is None or default is argparse.SUPPRESS or default in ("", (), [])


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=_xfail(HELP_XFAIL[m])) if m in HELP_XFAIL else m for m in CLIS])
def test_help_shows_every_default(module, monkeypatch, capsys):
    parser, out = _parser_and_help(module, monkeypatch, capsys)
    assert out.startswith("usage:")
    formatter = parser._get_formatter()
    shown = _squash(out)
    missing = []
    for action in parser._actions:
        if _no_default(action):
            continue
        text = formatter._expand_help(action) if action.help else ""
        # the default is in this option's own help line, and that line is what --help printed
        if _squash(str(action.default)) not in _squash(text) or _squash(text) not in shown:
            missing.append(f"{'/'.join(action.option_strings)} (default {action.default!r})")
    assert not missing, f"{module} --help does not show the default of: {', '.join(missing)}"


@pytest.mark.parametrize("module, argv, message", BAD)
def test_bad_argument_is_one_error_line(module, argv, message, monkeypatch, capsys, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    mod = importlib.import_module(module)
    _stub_work(module, monkeypatch)
    try:
        code = _exit_code(mod.main, argv)
    except WorkStarted as e:
        pytest.fail(f"{module} {argv}: started work ({e}) before rejecting the argument")
    except Exception as e:  # noqa: BLE001 - on the command line this would be a traceback
        pytest.fail(f"{module} {argv}: uncaught {type(e).__name__}: {e}")
    captured = capsys.readouterr()
    err = captured.err
    assert code != 0, f"{module} {argv} exited 0"
    assert "Traceback" not in err + captured.out
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, f"{module} {argv}: expected one error line, got:\n{err}"
    assert re.match(r"^(\S.*: )?error: \S", errors[0]), errors[0]
    if message is not None:
        assert message in errors[0], f"{module} {argv}: {errors[0]!r} lacks {message!r}"
