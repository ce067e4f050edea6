"""The commands on the tiny A14B-shaped student (random weights, synthetic prompts)."""

import json

import pytest
from helpers import random_student, save_student

from train import calibrate as calibrate_cli
from train import evaluate as evaluate_cli
from train.calibration.manifest import load_quantized_student


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return save_student(tmp_path_factory.mktemp("student") / "student", random_student(9))


def test_calibrate_cli_writes_a_loadable_packed_student(tmp_path, student):
    out = tmp_path / "q"
    rc = calibrate_cli.main(["--student", str(student), "--out", str(out), "--world", "synthetic",
                             "--num-prompts", "2", "--algorithm", "smooth", "--protect-k", "1"])
    assert rc == 0
    meta = json.loads((out / "calibration.json").read_text())
    assert meta["storage"] == "packed" and meta["quant_format"] == "hif4"
    for e in ("high", "low"):
        info = meta["experts"][e]
        assert len(info["protected"]) == 1 and info["sensitivity"]["keep_fp"]
        assert len(info["quantized"]) == 10  # 2 blocks x 10 linears, one block protected
        assert (out / f"dit_{e}" / "packed.json").is_file()
    assert meta["experts"]["high"]["steps"] == [0, 1] and meta["experts"]["low"]["steps"] == [2, 3]
    model, cfg, _ = load_quantized_student(out)
    assert cfg.timesteps == (1000.0, 750.0, 500.0, 250.0)
    assert model.high.blocks[0].ffn.fc1 is not None


def test_calibrate_cli_errors(tmp_path, student, capsys):
    assert calibrate_cli.main(["--student", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                               "--world", "synthetic"]) == 1
    assert "not a wanjax checkpoint" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert calibrate_cli.main(["--student", str(student), "--out", str(tmp_path / "full"),
                               "--world", "synthetic"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        calibrate_cli.main(["--student", str(student), "--out", "o", "--format", "fp3"])


@pytest.mark.slow
def test_evaluate_cli_writes_the_report(tmp_path, student):
    out = tmp_path / "eval"
    rc = evaluate_cli.main(["--student", str(student), "--teacher", str(student), "--out",
                            str(out), "--world", "synthetic", "--num-prompts", "2", "--num-eval",
                            "2", "--steps", "4", "--teacher-steps", "4", "--algorithm", "rtn",
                            "--ablations", "unprotected,nvfp4", "--repeats", "2"])
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "## Acceptance summary" in report and "HiF4 beats NVFP4-style" in report
    assert (out / "per_step_error.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert set(results["ablations"]) == {"main", "unprotected", "nvfp4"}
    assert len(results["steps"]["4"]["quant"]["steps"]) == 4
    assert len(results["ablations"]["nvfp4"]["repeats"]) == 2


def test_an_expert_no_step_uses_stays_full_precision(tmp_path):
    """A 1-step student never runs its low-noise expert: calibration quantizes the high expert
    alone, keeps the low one as it was (float), and the result still loads and samples."""
    import dataclasses

    import numpy as np
    from helpers import STUDENT_CFG

    from wanjax.io.params import flat_params

    one_step = dataclasses.replace(STUDENT_CFG, timesteps=(1000.0,), phased=False)
    experts = random_student(3)
    path = save_student(tmp_path / "student", experts, one_step)
    out = tmp_path / "q"
    assert calibrate_cli.main(["--student", str(path), "--out", str(out), "--world", "synthetic",
                               "--num-prompts", "2", "--algorithm", "rtn"]) == 0
    meta = json.loads((out / "calibration.json").read_text())
    assert meta["experts"]["low"]["unused"] and meta["experts"]["low"]["quantized"] == {}
    assert len(meta["experts"]["high"]["quantized"]) == 10
    for mode in ("fake", "kernel"):
        model, cfg, _ = load_quantized_student(out, mode)
        assert cfg.timesteps == (1000.0,)
        low = {k: np.asarray(v) for k, v in flat_params(model.low).items()}
        for k, v in flat_params(experts["low"]).items():
            np.testing.assert_array_equal(low[k], np.asarray(v), err_msg=k)
