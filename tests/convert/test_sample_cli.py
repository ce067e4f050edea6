"""`python -m wanjax.sample` on a converted tiny Wan snapshot (DiT experts, umT5, VAE, tokenizer):
prompt to mp4, the sidecar, compile reuse, and one-line errors for impossible settings."""

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from test_convert_components import converted, full, refs, tokenizer_dir  # noqa: F401

from wanjax import sample
from wanjax.io import checkpoint

TINY = ["--size", "32*32", "--frames", "5", "--steps", "3", "--fps", "8"]


def test_prompt_to_mp4(converted, tmp_path):  # noqa: F811
    out = tmp_path / "videos"
    code = sample.main(["--checkpoint", str(converted["diffusers"]), "--prompt", "a red fox",
                        "--prompt", "waves on rocks", "--batch-size", "2", "--out", str(out),
                        *TINY])
    assert code == 0
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 2
    frames = iio.imread(videos[0])
    assert frames.shape == (5, 32, 32, 3)  # 5 frames decoded from 2 latent frames
    side = json.loads(videos[0].with_suffix(".json").read_text())
    assert side["prompt"] == "a red fox" and side["sample_config"]["num_steps"] == 3
    assert side["world"] == "wan" and side["negative_prompt"]  # the official negative prompt


@pytest.mark.parametrize("argv, message", [
    (["--frames", "6"], "4n+1"),
    (["--size", "30*32"], "divisible by 16"),
    (["--size", "big"], "W*H"),
    (["--checkpoint", "/nonexistent"], "not found"),
])
def test_bad_settings_are_one_line_errors(argv, message, capsys, tmp_path):
    code = sample.main(["--prompt", "x", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error:") and message in err and "\n" not in err


def test_unknown_solver_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        sample.main(["--solver", "heun"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _make_student(teacher, student):
    """A DMD student as `train.trainer.export_student` writes it: the two experts only, a
    few-step sampling config and the teacher's path."""
    meta = checkpoint.read_manifest(teacher)
    student.mkdir()
    comps = {}
    for e in ("high", "low"):
        entry = dict(meta["components"][f"dit_{e}"])
        shutil.copytree(teacher / entry["params"], student / entry["params"])
        comps[f"dit_{e}"] = entry
    few_step = {"timesteps": [1000.0, 500.0], "shift": 5.0, "solver": "x0_renoise",
                "guide_high": 1.0, "guide_low": 1.0, "boundary": meta.get("boundary", 0.875)}
    checkpoint.write_manifest(student, {"dtype": meta.get("dtype", "float32"),
                                        "components": comps,
                                        "student": {"sample_config": few_step,
                                                    "teacher": str(teacher)}})
    return student


def test_student_takes_encoder_vae_and_tokenizer_from_its_teacher(converted, tmp_path):  # noqa: F811
    """Sampling a student finds the text encoder, VAE and tokenizer in the teacher its manifest
    names."""
    student = _make_student(converted["diffusers"], tmp_path / "student")
    out = tmp_path / "videos"
    args = ["--checkpoint", str(student), "--prompt", "a red fox", "--out", str(out),
            "--size", "32*32", "--frames", "5"]
    assert sample.main(args) == 0
    side = json.loads(next(out.glob("*.json")).read_text())
    assert side["sample_config"]["timesteps"] == [1000.0, 500.0]  # the student's own grid
    # without a reachable teacher it is a one-line error, not a stack trace
    manifest = checkpoint.read_manifest(student)
    manifest["student"]["teacher"] = str(tmp_path / "gone")
    checkpoint.write_manifest(student, manifest)
    assert sample.main(args) == 1


def test_calibrated_student_samples_its_packed_hif4_layers(converted, tmp_path, capsys):  # noqa: F811
    """`train.calibrate` output samples like its student (same grid, same assets), but through
    the packed HiF4 layers: the frames differ from the FP student's and stay close to them."""
    from train import calibrate

    student = _make_student(converted["diffusers"], tmp_path / "student")
    quant = tmp_path / "hif4"
    assert calibrate.main(["--student", str(student), "--out", str(quant), "--world",
                           "synthetic", "--num-prompts", "2", "--algorithm", "rtn",
                           "--protect", "none"]) == 0
    videos = {}
    for name, ckpt in (("fp", student), ("hif4", quant)):
        out = tmp_path / name
        assert sample.main(["--checkpoint", str(ckpt), "--prompt", "a red fox", "--out",
                            str(out), "--size", "32*32", "--frames", "5"]) == 0
        side = json.loads(next(out.glob("*.json")).read_text())
        assert side["sample_config"]["timesteps"] == [1000.0, 500.0]
        videos[name] = iio.imread(next(out.glob("*.mp4"))).astype(np.float64)
    assert videos["fp"].shape == videos["hif4"].shape == (5, 32, 32, 3)
    diff = np.abs(videos["fp"] - videos["hif4"])
    assert diff.max() > 0 and diff.mean() < 0.25 * np.abs(videos["fp"] - 128).mean() + 8
    # the student it was calibrated from must stay readable (it names the teacher's assets)
    shutil.rmtree(student)
    capsys.readouterr()
    assert sample.main(["--checkpoint", str(quant), "--prompt", "x", "--out",
                        str(tmp_path / "o"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "calibrated from the student" in err and "\n" not in err
