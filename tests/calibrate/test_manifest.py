"""The calibrated student on disk: manifest round trip, packed and fake-quant storage."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import STUDENT_CFG, TINY, random_student

from train.calibration.data import batches, synthetic_world
from train.calibration.manifest import (
    CalibrationManifest,
    load_quantized_student,
    read_manifest,
    save_quantized_student,
    write_manifest,
)
from train.calibration.pipeline import CalibrationOptions, calibrate
from train.calibration.trajectory import ExpertRunner, run_trajectory
from wanjax.sampling.loop import dit_apply, make_sampler


@pytest.fixture(scope="module")
def calibrated():
    student = random_student(5)
    world = synthetic_world(TINY)
    bs = batches(world, world.prompts[:2], seed=1, batch_size=2)
    out = {}
    for fmt in ("hif4", "nvfp4"):
        opts = CalibrationOptions(fmt=fmt, algorithm="smooth", protect=("blocks.0",),
                                  samples_per_call=8)
        out[fmt] = calibrate(student, STUDENT_CFG, bs, opts, log=lambda m: None)
    return out


def _manifest(report, fmt, storage):
    return CalibrationManifest(
        quant_format=fmt, storage=storage, boundary=0.875,
        sample_config=dataclasses.asdict(STUDENT_CFG), experts=report["experts"],
        options=report["options"], source={"prompts": ["a", "b"]})


def _inputs():
    k = jax.random.split(jax.random.key(3), 2)
    return (jax.random.normal(k[0], (2, 16, 2, 4, 4)), jnp.array([990.0, 300.0]),
            jax.random.normal(k[1], (2, 4, TINY.text_dim)))


def test_manifest_round_trips(tmp_path, calibrated):
    _, report = calibrated["hif4"]
    m = _manifest(report, "hif4", "packed")
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.to_json() == json.loads(json.dumps(m.to_json()))
    assert back.sampling() == STUDENT_CFG
    assert back.protected() == {"high": ["blocks.0"], "low": ["blocks.0"]}
    assert CalibrationOptions.from_json(back.options) == CalibrationOptions.from_json(
        report["options"])
    layer = back.experts["high"]["layers"]["blocks.1.self_attn.q"]
    assert {"rtn", "final", "cos", "alpha", "smoothing"} <= set(layer)


@pytest.mark.parametrize("fmt,storage", [("hif4", "packed"), ("nvfp4", "fake-quant")])
def test_saved_student_samples_like_the_calibrated_one(tmp_path, calibrated, fmt, storage):
    quant, report = calibrated[fmt]
    save_quantized_student(tmp_path / "q", quant, _manifest(report, fmt, storage))
    model, cfg, manifest = load_quantized_student(tmp_path / "q", "fake")
    assert cfg == STUDENT_CFG and manifest.storage == storage
    assert manifest.experts["low"]["quantized"]["blocks.1.ffn.fc2"]["weight_fmt"] == fmt
    assert "blocks.0.ffn.fc2" not in manifest.experts["low"]["quantized"]  # protected
    x, t, ctx = _inputs()
    for e in ("high", "low"):
        np.testing.assert_array_equal(np.asarray(model.expert(e)(x, t, ctx)),
                                      np.asarray(quant[e](x, t, ctx)))
    if fmt == "hif4":  # the packed kernel path computes the same product, and samples
        kernel, _, _ = load_quantized_student(tmp_path / "q", "kernel")
        np.testing.assert_allclose(np.asarray(kernel.high(x, t, ctx)),
                                   np.asarray(quant["high"](x, t, ctx)), rtol=1e-5, atol=1e-5)
        gh, ph = nnx.split(kernel.high)
        gl, pl = nnx.split(kernel.low)
        sample = make_sampler(dit_apply(gh), dit_apply(gl), cfg)
        key = jax.random.key(0)
        got = sample(ph, pl, x, ctx, None, key)
        want = run_trajectory(ExpertRunner(quant, cfg).bind(ctx, None), cfg, x, key).final
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(ValueError, match="packed HiF4 only"):
            load_quantized_student(tmp_path / "q", "kernel")


def test_bad_manifests_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m train.calibrate"):
        read_manifest(tmp_path)
    (tmp_path / "calibration.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="not a 'wanjax-calibrated-student'"):
        read_manifest(tmp_path)
