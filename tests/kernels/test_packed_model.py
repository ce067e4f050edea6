"""Packing a tiny DiT by rule, and the packed checkpoint (orbax + manifest) round trip."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wanjax.config import DiTConfig, Precision
from wanjax.models.dit import WanDiT
from wanjax.quant import QuantConfig, QuantLinear, QuantRule, apply_quantization
from wanjax.quant.packed_linear import PackedLinear
from wanjax.quant.packed_model import (
    load_packed,
    pack_model,
    read_packed_manifest,
    save_packed,
    set_kernel_backend,
)
from wanjax.quant.rules import path_str

CFG = DiTConfig(dim=64, ffn_dim=640, num_heads=4, num_layers=2, in_dim=4, out_dim=4,
                text_dim=32, freq_dim=32, text_len=8)
CALIBRATED = (
    QuantRule(include=("blocks.*.ffn.*",), config=QuantConfig(act_fmt=None)),  # W4A16 FFN
    QuantRule(include=("blocks.1.cross_attn.o",), config=QuantConfig(enabled=False)),
    QuantRule(include=("blocks.*",)),
)


def calibrated_student(seed: int = 0) -> WanDiT:
    """A tiny DiT as the calibration issue would hand it over: QuantLinears in the blocks, one
    disabled (protected), smoothing on a few, random non-zero head."""
    model = WanDiT(CFG, Precision(), rngs=nnx.Rngs(seed))
    head = model.head.proj.kernel
    head[...] = 0.05 * jax.random.normal(jax.random.key(seed + 1), head.shape)
    apply_quantization(model, CALIBRATED)
    rng = np.random.default_rng(seed)
    for block in model.blocks:
        block.self_attn.q.set_smoothing(np.exp(rng.uniform(-1, 1, CFG.dim)).astype(np.float32))
        block.ffn.fc2.set_smoothing(np.exp(rng.uniform(-1, 1, CFG.ffn_dim)).astype(np.float32))
    return model


def _inputs():
    rng = np.random.default_rng(0)
    latents = jnp.asarray(rng.standard_normal((1, 4, 3, 8, 8)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((1, 8, CFG.text_dim)), jnp.float32)
    return latents, jnp.asarray([700.0]), context


def _forward(model: WanDiT) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s: nnx.merge(graphdef, s)(*_inputs()))(state))


def _flat_state(model) -> dict:
    return {path_str(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


@pytest.fixture(scope="module")
def student() -> WanDiT:
    return calibrated_student()


@pytest.fixture(scope="module")
def packed_student(student):
    model = nnx.clone(student)
    return model, pack_model(model)


def test_pack_model_follows_the_calibration_and_matches_fake_quant(student, packed_student):
    packed, report = packed_student
    assert len(report.packed) == 2 * 10 - 1
    assert "blocks.1.cross_attn.o" in report.protected and "head.proj" in report.protected
    assert report.packed["blocks.0.ffn.fc1"].act_fmt is None
    assert report.packed["blocks.0.self_attn.q"].smoothing
    assert report.packed["blocks.0.self_attn.k"].act_fmt == "hif4"
    assert isinstance(packed.blocks[1].cross_attn.o, QuantLinear)
    assert isinstance(packed.blocks[0].ffn.fc2, PackedLinear)
    np.testing.assert_allclose(_forward(packed), _forward(student), rtol=1e-5, atol=1e-5)
    assert pack_model(packed).packed.keys() == report.packed.keys()  # idempotent


def test_save_and_load_round_trip(tmp_path, packed_student):
    model, _ = packed_student
    save_packed(tmp_path / "student", model, meta={"calibration": "unit-test"})
    manifest = read_packed_manifest(tmp_path / "student")
    assert manifest["meta"] == {"calibration": "unit-test"}
    assert manifest["layers"]["blocks.0.self_attn.q"]["smoothing"] is True
    assert "blocks.1.cross_attn.o" in manifest["protected"]
    loaded = load_packed(tmp_path / "student", CFG)
    got, want = _flat_state(loaded), _flat_state(model)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
    np.testing.assert_array_equal(_forward(loaded), _forward(model))

    set_kernel_backend(loaded, "tpu", interpret=True)
    assert loaded.blocks[0].self_attn.q.backend == "tpu"


def test_load_checks(tmp_path, student, packed_student):
    with pytest.raises(ValueError, match="no PackedLinear"):
        save_packed(tmp_path / "unpacked", student)
    half = nnx.clone(student)
    pack_model(half, QuantRule(include=("blocks.0.*",)))
    with pytest.raises(ValueError, match="would load as plain Linears"):
        save_packed(tmp_path / "half", half)
    save_packed(tmp_path / "ok", packed_student[0])
    other = DiTConfig(**{**CFG.__dict__, "num_layers": 3})
    with pytest.raises(ValueError, match="holds a model with config"):
        load_packed(tmp_path / "ok", other)
    with pytest.raises(FileNotFoundError, match="not a packed checkpoint"):
        load_packed(tmp_path, CFG)
    manifest = json.loads((tmp_path / "ok" / "packed.json").read_text())
    (tmp_path / "ok" / "packed.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="v99"):
        load_packed(tmp_path / "ok", CFG)
