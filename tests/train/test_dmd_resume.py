"""`python -m train.dmd` end to end on a tiny random teacher: resume is exact, errors are clean."""

import json
import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from configs import dmd_toy as toy_dmd
from configs import toy
from train import dmd
from wanjax.io import checkpoint
from wanjax.io.params import flat_params
from wanjax.loading import load_dit_module
from wanjax.models.dual_expert import DualExpertDiT

ARGS = ["--student-steps", "1000", "--iterations", "6", "--batch-size", "4", "--critic-ratio",
        "2", "--ckpt-every", "100", "--log-every", "1", "--quiet"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher")
    model = DualExpertDiT(toy.TEACHER, rngs=nnx.Rngs(0))
    comps = {}
    for e in ("high", "low"):
        m = model.expert(e)
        m.head.proj.kernel.set_value(
            jax.random.normal(jax.random.key(3), m.head.proj.kernel.shape) * 0.05)
        checkpoint.save_params(path / f"dit_{e}", flat_params(m))
        comps[f"dit_{e}"] = {"config": checkpoint.dit_config_to_json(toy.EXPERT),
                             "params": f"dit_{e}"}
    checkpoint.write_manifest(path, {"dtype": "float32", "boundary": toy.BOUNDARY,
                                     "components": comps, "world": "toy"})
    return path


def _student(out):
    """The params of every expert the run trained, keyed 'expert/param'."""
    comps = checkpoint.read_manifest(out / "student")["components"]
    return {f"{e}/{k}": np.asarray(v) for e in ("high", "low") if comps[f"dit_{e}"].get("trained")
            for k, v in flat_params(load_dit_module(out / "student", e)).items()}


def _run(teacher, out, extra=(), hook=None):
    args = dmd._parser().parse_args(["--teacher", str(teacher), "--out", str(out), *ARGS, *extra])
    return dmd.run(args, on_iteration=hook)


@pytest.fixture(scope="module")
def straight_run(teacher, tmp_path_factory):
    """One uninterrupted run (with the TensorBoard log on, checked below)."""
    out = tmp_path_factory.mktemp("straight")
    _run(teacher, out, extra=["--tensorboard"])
    return out


def test_sigterm_then_resume_equals_straight_run(teacher, straight_run, tmp_path):
    straight = _student(straight_run)

    def preempt(it):
        if it == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag

    with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
        _run(teacher, tmp_path / "resumed", hook=preempt)
    assert not (tmp_path / "resumed" / "student").exists()
    stage = tmp_path / "resumed" / "high"
    first_part = json.loads((stage / dmd.WALL_TIME_FILE).read_text())["seconds"]
    _run(teacher, tmp_path / "resumed")
    # the stage's wall time is both runs', not only the last one's
    total = json.loads((stage / dmd.WALL_TIME_FILE).read_text())["seconds"]
    assert 0 < first_part < total
    assert json.loads((stage / "DONE").read_text())["seconds"] == round(total, 1)
    resumed = _student(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k], err_msg=k)
    # the student actually moved away from the teacher
    assert any(not np.array_equal(straight[f"high/{k}"], v) for k, v in
               flat_params(load_dit_module(teacher, "high")).items())


def test_a_finished_run_extended_equals_the_straight_run(teacher, straight_run, tmp_path, capsys):
    """A larger --iterations continues a finished run (constant learning rates, a prompt order
    that does not depend on the length); a smaller one is refused."""
    out = tmp_path / "short"
    _run(teacher, out, extra=["--iterations", "4"])
    short = _student(out)
    _run(teacher, out)  # ARGS: 6 iterations
    assert "[high] extending from 4 to 6 iterations" in capsys.readouterr().err
    straight, extended = _student(straight_run), _student(out)
    for k in straight:
        np.testing.assert_array_equal(straight[k], extended[k], err_msg=k)
    assert any(not np.array_equal(short[k], extended[k]) for k in short)
    assert json.loads((out / "high" / "DONE").read_text())["iterations"] == 6
    with pytest.raises(ValueError, match=r"iterations: 6 -> 5\) \(a run can be extended, not sh"):
        _run(teacher, out, extra=["--iterations", "5"])


@pytest.mark.slow  # three 2-step runs (about 4 minutes); the extension itself is checked above
def test_extending_the_high_stage_trains_the_low_stage_again(teacher, tmp_path, capsys):
    two = ["--student-steps", "1000,500"]
    _run(teacher, tmp_path / "straight", extra=[*two, "--iterations", "4"])
    out = tmp_path / "extended"
    _run(teacher, out, extra=[*two, "--iterations", "2"])
    _run(teacher, out, extra=[*two, "--iterations", "4"])
    err = capsys.readouterr().err
    assert "[high] extending from 2 to 4" in err and "[low] trained from the shorter" in err
    assert json.loads((out / "low.superseded" / "DONE").read_text())["iterations"] == 2
    straight, extended = _student(tmp_path / "straight"), _student(out)
    assert straight.keys() == extended.keys() and any(k.startswith("low/") for k in straight)
    for k in straight:
        np.testing.assert_array_equal(straight[k], extended[k], err_msg=k)


def _rows(out):
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def _preempted_run_equals(teacher, tmp_path, extra, at):
    """A run stopped by SIGTERM after iteration `at` and resumed equals tmp_path/'straight'."""
    def preempt(it):
        if it == at:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        _run(teacher, tmp_path / "resumed", extra=extra, hook=preempt)
    _run(teacher, tmp_path / "resumed", extra=extra)
    straight, resumed = _student(tmp_path / "straight"), _student(tmp_path / "resumed")
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k], err_msg=k)


REGRESSION = ["--regression-weight", "2", "--regression-pairs", "6"]


def test_straight_run_logs_throughput_and_refuses_a_resume_with_other_settings(teacher,
                                                                              straight_run):
    rows = _rows(straight_run)
    # throughput: 3 x 20 x 20 toy frames in (1, 4, 4) patches are 75 tokens per sample
    assert rows and all(r["tokens_per_s"] == pytest.approx(75 * r["samples_per_s"]) for r in rows)
    assert all(r["step_time_s"] == pytest.approx(1 / r["iterations_per_s"]) for r in rows)
    # the settings are checked before anything is written, naming what changed
    with pytest.raises(ValueError, match=r"other settings \(regression_weight: 0.0 -> 3.0\)"):
        _run(teacher, straight_run, extra=["--regression-weight", "3"])


def test_a_settings_file_without_a_newer_setting_resumes_with_its_default(tmp_path):
    """A settings file written before a setting existed (here `handover`) compares as its
    default: the run resumes; a real change is still refused."""
    cfg = toy_dmd.DMD
    dmd._check_settings(tmp_path, cfg, "teacher", resume=False)  # writes the file
    path = tmp_path / dmd.SETTINGS_FILE
    old = json.loads(path.read_text())
    del old["handover"]
    path.write_text(json.dumps(old))
    dmd._check_settings(tmp_path, cfg, "teacher", resume=True)
    old["handover"] = "x0_bridge"
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"handover: 'x0_bridge' -> 'bridge'"):
        dmd._check_settings(tmp_path, cfg, "teacher", resume=True)


@pytest.mark.slow  # a third end-to-end run (about 3 minutes); the resume itself is checked above
def test_regression_run_resumes_exactly_and_logs_its_term(teacher, tmp_path):
    """With the teacher-ODE regression term on: the pairs are cached in OUT, every generator row
    logs the term, and a SIGTERM + resume reuses the cached pairs and equals the straight run."""
    _run(teacher, tmp_path / "straight", extra=REGRESSION)
    rows = _rows(tmp_path / "straight")
    assert all(r["regression_loss"] > 0 for r in rows)
    assert (tmp_path / "straight" / "ode_pairs.npz").is_file()
    _preempted_run_equals(teacher, tmp_path, REGRESSION, at=3)


GAN = ["--gan-weight", "0.5", "--regression-pairs", "6", "--gan-noise-shift", "1"]


@pytest.mark.slow  # about 2 minutes; the GAN losses at their own levels are unit-tested in test_gan
def test_gan_run_on_teacher_samples_logs_both_sides(teacher, tmp_path):
    """With the GAN term on teacher samples (at its own noise levels: the second critic pass),
    the ODE pairs are made for it alone and both sides of the term are logged (its resume is
    checked on real data below: the same state)."""
    _run(teacher, tmp_path / "straight", extra=GAN)
    rows = _rows(tmp_path / "straight")
    assert all(r["gan_gen_loss"] > 0 and r["gan_critic_loss"] > 0 for r in rows)
    assert all("regression_loss" not in r for r in rows)
    assert (tmp_path / "straight" / "ode_pairs.npz").is_file()


GAN_DATA = ["--gan-weight", "0.5", "--gan-real", "data", "--gan-reversed-weight", "0.5"]
TWO_STEPS = ["--student-steps", "1000,500"]


def test_gan_on_real_data_needs_no_pairs_and_resumes_exactly(teacher, tmp_path):
    """GAN against the toy world's real renders (reversed renders as extra fakes), 1-step
    student: no teacher ODE pairs are made, the term is logged, and with the head and its
    optimizer in the checkpoint a SIGTERM + resume equals the straight run."""
    _run(teacher, tmp_path / "straight", extra=GAN_DATA)
    rows = _rows(tmp_path / "straight")
    assert all(r["gan_critic_loss"] > 0 and 0 <= r["gan_reversed_acc"] <= 1 for r in rows)
    assert not (tmp_path / "straight" / "ode_pairs.npz").exists()
    _preempted_run_equals(teacher, tmp_path, GAN_DATA, at=2)


@pytest.mark.slow  # three 2-step runs (about 5 minutes); the 1-step case above is the same state
def test_gan_on_real_data_in_both_phased_stages_resumes_exactly(teacher, tmp_path):
    """The same on a 2-step phased student (stage 1's real samples are renders noised to its
    endpoint): both stages log the term, and a SIGTERM in stage 1 + resume equals the straight
    run."""
    extra = [*GAN_DATA, *TWO_STEPS]
    _run(teacher, tmp_path / "straight", extra=extra)
    rows = _rows(tmp_path / "straight")
    assert {r["stage"] for r in rows} == {"high", "low"}
    assert all(r["gan_critic_loss"] > 0 and 0 <= r["gan_reversed_acc"] <= 1 for r in rows)
    assert not (tmp_path / "straight" / "ode_pairs.npz").exists()
    _preempted_run_equals(teacher, tmp_path, extra, at=2)


@pytest.mark.slow  # a 2-step run (about 3 minutes)
def test_gan_stages_low_skips_the_term_in_the_phased_high_stage(teacher, tmp_path):
    """`--gan-stages low`: the high stage trains without the head (no GAN rows, no real batch),
    the low stage with it."""
    _run(teacher, tmp_path / "run", extra=[*GAN_DATA, *TWO_STEPS, "--gan-stages", "low"])
    rows = _rows(tmp_path / "run")
    assert {r["stage"] for r in rows} == {"high", "low"}
    assert all(("gan_critic_loss" in r) == (r["stage"] == "low") for r in rows)
    assert all("gan_gen_loss" in r for r in rows if r["stage"] == "low")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert dmd.main(["--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and "\n" not in err
    assert dmd.main(["--student-steps", "1000,abc", "--out", str(tmp_path / "o")]) == 1
    assert "must be numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        dmd.main(["--moe-mode", "sideways"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        dmd.main(["--regression-weight", "-1"])
    assert e.value.code == 2
    assert dmd.main(["--guidance", "5,4,3", "--out", str(tmp_path / "o")]) == 1
    assert "one scale or HIGH,LOW" in capsys.readouterr().err


def test_guidance_sets_the_real_scores_scale_per_expert():
    def cfg(*flags):
        return dmd._override(toy_dmd.DMD, dmd._parser().parse_args(list(flags)))

    assert (cfg().guidance_high, cfg().guidance_low) == (3.0, 3.0)  # the toy preset's
    assert (cfg("--guidance", "5").guidance_high, cfg("--guidance", "5").guidance_low) == (5, 5)
    both = cfg("--guidance", "5,4")
    assert (both.guidance_high, both.guidance_low) == (5.0, 4.0)


def _tfrecords(path):
    """The records of a TFRecord file (length, crc, data, crc), read from the format itself."""
    import struct

    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + length])
        pos += 12 + length + 4
    return out


def test_tensorboard_events_hold_the_jsonl_rows(straight_run):
    from tensorboardX.proto import event_pb2

    scalars = {}
    for events in (straight_run / "tensorboard").glob("events.out.tfevents.*"):
        for record in _tfrecords(events):
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                scalars[(v.tag, event.step)] = v.simple_value
    rows = _rows(straight_run)
    assert rows and len(scalars) == sum(len(r) - 2 for r in rows)
    for r in rows:
        for k, v in r.items():
            if k not in ("stage", "iteration"):
                assert scalars[(f"{r['stage']}/{k}", r["iteration"])] == pytest.approx(v, rel=1e-6)


def test_per_stage_iterations_extend_only_the_stage_that_grew(tmp_path, capsys):
    """`--iterations 4,3` on a finished 4,2 phased run continues the low stage alone (the high
    stage it was trained from is unchanged); growing the high stage retrains the low one."""
    two = ["--student-steps", "1000,500"]

    def cfg(counts):
        return dmd._override(toy_dmd.DMD, dmd._parser().parse_args([*two, "--iterations", counts]))

    assert cfg("4,3").iterations == (4, 3) and cfg("4").iterations == 4
    assert (cfg("4,3").iterations_of("high"), cfg("4,3").iterations_of("low")) == (4, 3)
    with pytest.raises(ValueError, match=r"one per stage \('high', 'low'\)"):
        cfg("4,3,2")
    out = tmp_path / "run"
    out.mkdir()
    dmd._check_settings(out, cfg("4,2"), "t", resume=True)
    for stage, n in (("high", 4), ("low", 2)):
        (out / stage).mkdir(parents=True)
        (out / stage / "DONE").write_text(json.dumps({"stage": stage, "iterations": n}))
    dmd._check_settings(out, cfg("4,3"), "t", resume=True)  # longer: accepted
    assert dmd._plan_stages(out, cfg("4,3"), {"high": 1, "low": 2}, True) == ["low"]
    assert "[low] extending from 2 to 3" in capsys.readouterr().err
    assert not (out / "low.superseded").exists()
    with pytest.raises(ValueError, match="extended, not shortened"):
        dmd._check_settings(out, cfg("3,3"), "t", resume=True)
    (out / "low" / "DONE").write_text(json.dumps({"stage": "low", "iterations": 3}))
    assert dmd._plan_stages(out, cfg("5,3"), {"high": 1, "low": 2}, True) == ["high", "low"]
    assert (out / "low.superseded").is_dir()
