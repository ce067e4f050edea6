"""`train.dmd_report`: its verdict rule and the flags it hands `train.dmd` (nothing is trained)."""

from __future__ import annotations

import pytest

from train import dmd, dmd_report


def _row(fd: float, acc: float) -> dict:
    return {"fd": fd, "swd": 0.1, "prompt_acc": acc, "on_mode": 0.0, "diversity": 0.2,
            "diversity_real": 0.18, "mode_tv": 0.1}


def _rows(student_fd: float, student_acc: float) -> dict:
    rows = {f"teacher {n}": _row(1000.0, 0.6) for n in (1, 2, 4, 40)}
    rows.update({f"student {n}": _row(student_fd, student_acc) for n in (1, 2, 4)})
    return rows


@pytest.mark.parametrize("fd, acc, wide", [
    (500.0, 0.8, True),     # FD 2x, error 0.4 -> 0.2 (2x): exactly at the bar
    (499.0, 0.85, True),
    (501.0, 0.9, False),    # FD just short of 2x
    (100.0, 0.79, False),   # error rate 0.4 -> 0.21, 1.9x
])
def test_verdict_needs_both_ratios(fd, acc, wide):
    lines = dmd_report.verdicts(_rows(fd, acc))
    assert len(lines) == 3
    for line in lines[:2]:
        assert ("NOT a wide margin" not in line) == wide, line


def test_overall_verdict_needs_the_rule_under_every_scoring():
    wins, loses = _rows(400.0, 0.9), _rows(400.0, 0.7)  # error 0.4 -> 0.1 (4x) / -> 0.3 (1.3x)
    assert dmd_report.overall({"raw": wins, "clipped": wins}) == {1: True, 2: True}
    assert dmd_report.overall({"raw": wins, "clipped": loses}) == {1: False, 2: False}
    lines = dmd_report.overall_lines({"raw": loses, "clipped": wins})
    assert lines[0] == "- 1-step student: NOT a wide margin (the rule holds under: clipped)"
    assert dmd_report.overall_lines({"raw": wins})[1].endswith("wide margin under every scoring")


def test_student_stages_of_the_toy_grids():
    assert dmd_report.student_stages(1) == ("high",)
    assert dmd_report.student_stages(2) == ("high", "low")
    assert dmd_report.gan_stages_of(1, ("low",)) == ()
    assert dmd_report.gan_stages_of(4, ("low", "high")) == ("high", "low")
    assert dmd_report.student_stages(2, "joint") == ("joint",)
    assert dmd_report.gan_stages_of(2, ("low",), "joint") == ()  # no phased stage: no GAN


def _argv_of(monkeypatch, steps: int, **kwargs) -> list[str]:
    seen = []
    monkeypatch.setattr(dmd, "run", lambda args: seen.append(args) or "path")
    monkeypatch.setattr(dmd, "_parser", lambda: _Recorder())
    dmd_report.train_student(steps, "out", "teacher", 10, 0, **kwargs)
    return seen[0]


class _Recorder:
    def parse_args(self, argv):
        return list(argv)


def test_gan_stages_reach_train_dmd_only_where_the_student_has_them(monkeypatch):
    argv = _argv_of(monkeypatch, 2, gan_weight=1.0, gan_stages=("low",))
    assert argv[argv.index("--gan-stages") + 1] == "low" and "--gan-weight" in argv
    # the 1-step student has no low stage: it trains without the GAN term, not with an error
    argv = _argv_of(monkeypatch, 1, gan_weight=1.0, gan_stages=("low",), gan_reversed_weight=1.0)
    assert not any(a.startswith("--gan") for a in argv)


def test_guidance_reaches_train_dmd_only_when_given(monkeypatch):
    argv = _argv_of(monkeypatch, 2, guidance=(5.0, 3.0))
    assert argv[argv.index("--guidance") + 1] == "5.0,3.0"
    assert "--guidance" not in _argv_of(monkeypatch, 2)  # the preset's


def test_moe_mode_reaches_train_dmd_when_joint(monkeypatch):
    argv = _argv_of(monkeypatch, 2, moe_mode="joint")
    assert argv[argv.index("--moe-mode") + 1] == "joint"
    assert "--moe-mode" not in _argv_of(monkeypatch, 2)  # phased: the preset's


def test_per_stage_iterations_reach_train_dmd_as_one_count_per_stage(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(dmd, "run", lambda args: seen.append(args) or "path")
    dmd_report.train_student(2, tmp_path / "o", "teacher", (3000, 5000), 0)
    dmd_report.train_student(2, tmp_path / "o", "teacher", 700, 0)
    assert [a.iterations for a in seen] == [(3000, 5000), (700,)]  # train.dmd's own parser


def test_train_dmd_rejects_gan_options_without_the_gan_term(tmp_path):
    args = dmd._parser().parse_args(["--out", str(tmp_path / "o"), "--gan-stages", "low"])
    with pytest.raises(ValueError, match="--gan-weight"):
        dmd.run(args)
    assert not (tmp_path / "o").exists()  # nothing written


def _stub_report(monkeypatch, trained: dict, guidance: dict | None = None,
                 iterations: dict | None = None, modes: dict | None = None) -> None:
    """Stubs training and sampling out of `dmd_report.main`: teachers overshoot the range,
    students return real renders; `trained[steps]` records each student's noise shift,
    `guidance[steps]` its real-score guidance, `iterations[steps]` its critic iterations,
    `modes[steps]` its dual-expert handling."""
    guidance = {} if guidance is None else guidance
    iterations = {} if iterations is None else iterations
    modes = {} if modes is None else modes
    from types import SimpleNamespace

    from train.toy import metrics

    def fake_sample(model, prompts, cfg, seed):
        real = metrics.real_videos(prompts, split="test")
        return real if model == "student" else 1.6 * real

    def fake_train(steps, out, teacher, iters, seed, reg, gan, noise_shift, *a, **kw):
        trained[steps] = noise_shift
        guidance[steps] = kw.get("guidance")
        iterations[steps] = iters
        modes[steps] = kw.get("moe_mode")
        return "student"

    monkeypatch.setattr(dmd_report, "load_teacher", lambda path: str(path))
    monkeypatch.setattr(dmd_report, "train_student", fake_train)
    monkeypatch.setattr(dmd_report, "sample_videos", fake_sample)
    monkeypatch.setattr(dmd_report, "student_sample_config", lambda manifest: None)
    monkeypatch.setattr(dmd_report, "checkpoint", SimpleNamespace(read_manifest=lambda path: {}))


def test_report_scores_raw_and_clipped_and_writes_both(monkeypatch, tmp_path):
    """The whole command with training and sampling stubbed."""
    import json

    _stub_report(monkeypatch, {})
    assert dmd_report.main(["--out", str(tmp_path), "--per-prompt", "2"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["rows"]) == {"raw", "clipped"}
    raw, clipped = report["rows"]["raw"], report["rows"]["clipped"]
    assert clipped["student 1"] == raw["student 1"]  # real renders: clipping changes nothing
    assert clipped["teacher 1"]["fd"] != raw["teacher 1"]["fd"]
    text = (tmp_path / "report.md").read_text()
    assert "## Raw scoring" in text and "## Clipped scoring" in text and "## Verdict" in text
    assert "`teacher_1.png`" in text and (tmp_path / "teacher_1.png").is_file()
    assert report["wide_margin"] == {
        str(n): all(dmd_report.wide_margin(rows, n) for rows in (raw, clipped)) for n in (1, 2)}


def test_report_takes_one_noise_shift_and_guidance_per_student(monkeypatch, tmp_path, capsys):
    """`--noise-shift 1,5,5` and `--guidance-high 3,5,3` reach each student's `python -m train.dmd`;
    two values are refused."""
    import json

    trained: dict = {}
    guidance: dict = {}
    _stub_report(monkeypatch, trained, guidance)
    assert dmd_report.main(["--out", str(tmp_path), "--per-prompt", "2",
                            "--noise-shift", "1,5,5", "--guidance-high", "3,5,3"]) == 0
    assert trained == {1: 1.0, 2: 5.0, 4: 5.0}
    assert guidance == {1: (3.0, 3.0), 2: (5.0, 3.0), 4: (3.0, 3.0)}  # low: the preset's
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["noise_shift"] == {"1": 1.0, "2": 5.0, "4": 5.0}
    assert report["guidance"] == {"1": [3.0, 3.0], "2": [5.0, 3.0], "4": [3.0, 3.0]}
    assert "3/3 (1 step), 5/3 (2 steps), 3/3 (4 steps)" in (tmp_path / "report.md").read_text()
    dmd_report.main(["--out", str(tmp_path / "one"), "--per-prompt", "2", "--noise-shift", "1"])
    assert trained == {1: 1.0, 2: 1.0, 4: 1.0}
    assert guidance == {1: None, 2: None, 4: None}  # no --guidance-*: train.dmd keeps the preset's
    with pytest.raises(SystemExit) as e:
        dmd_report.main(["--out", str(tmp_path / "x"), "--noise-shift", "1,5"])
    assert e.value.code == 2 and "--noise-shift takes one number or 3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_takes_per_stage_iterations_per_student(monkeypatch, tmp_path, capsys):
    """`--iterations 8000,3000:5000,2000`: the 2-step student's phased stages get their own
    counts; a pair for the 1-step student (one stage) is a usage error before anything runs."""
    import json

    iterations: dict = {}
    _stub_report(monkeypatch, {}, {}, iterations)
    assert dmd_report.main(["--out", str(tmp_path), "--per-prompt", "2",
                            "--iterations", "8000,3000:5000,2000"]) == 0
    assert iterations == {1: 8000, 2: (3000, 5000), 4: 2000}
    assert json.loads((tmp_path / "report.json").read_text())["iterations"] == {
        "1": 8000, "2": [3000, 5000], "4": 2000}
    assert "8000 (1 step), 3000 high + 5000 low (2 steps), 2000 (4 steps)" in (
        tmp_path / "report.md").read_text()
    for bad, message in (("8000:10,2000,2000", "the 1-step student has 1 training stage"),
                         ("8000,1:2:3,2000", "takes 2 count(s)"),
                         ("8000,3000:x,2000", "not an integer")):
        with pytest.raises(SystemExit) as e:
            dmd_report.main(["--out", str(tmp_path / "x"), "--iterations", bad])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_takes_one_moe_mode_per_student(monkeypatch, tmp_path, capsys):
    """`--moe-mode phased,joint,phased` reaches each student; a joint student has one training
    stage, so a HIGH:LOW count for it is a usage error; an unknown mode is one too."""
    import json

    modes: dict = {}
    _stub_report(monkeypatch, {}, {}, {}, modes)
    assert dmd_report.main(["--out", str(tmp_path), "--per-prompt", "2",
                            "--moe-mode", "phased,joint,phased"]) == 0
    assert modes == {1: "phased", 2: "joint", 4: "phased"}
    assert json.loads((tmp_path / "report.json").read_text())["moe_mode"] == {
        "1": "phased", "2": "joint", "4": "phased"}
    assert "phased (1 step), joint (2 steps), phased (4 steps)" in (
        tmp_path / "report.md").read_text()
    for argv, message in ((["--moe-mode", "joint", "--iterations", "8000,3000:5000,2000"],
                           "the 2-step student has 1 training stage(s) (joint)"),
                          (["--moe-mode", "phased,sideways,phased"], "'sideways' is not one of")):
        with pytest.raises(SystemExit) as e:
            dmd_report.main(["--out", str(tmp_path / "x"), *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
