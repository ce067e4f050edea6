"""Applying quantization to a model by path rules, on a toy model with the DiT's path shape."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from wanjax.models.layers import Linear
from wanjax.quant import QuantConfig, QuantLinear, QuantRule, apply_quantization

DIM, FFN, BLOCKS = 64, 128, 3
PROJECTIONS = ("q", "k", "v", "o")


class Attention(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        for name in PROJECTIONS:
            setattr(self, name, Linear(DIM, DIM, rngs=rngs))

    def __call__(self, x, context):
        return self.o(jnp.tanh(self.q(x) + self.k(context)) * self.v(context))


class FeedForward(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = Linear(DIM, FFN, rngs=rngs)
        self.fc2 = Linear(FFN, DIM, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jnp.tanh(self.fc1(x)))


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.self_attn = Attention(rngs)
        self.cross_attn = Attention(rngs)
        self.ffn = FeedForward(rngs)

    def __call__(self, x, context):
        x = x + self.self_attn(x, x)
        x = x + self.cross_attn(x, context)
        return x + self.ffn(x)


class TextEmbedding(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear_1 = Linear(DIM, DIM, rngs=rngs)


class Head(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.proj = Linear(DIM, 16, rngs=rngs)


class ToyDiT(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.text_embedding = TextEmbedding(rngs)
        self.time_projection = Linear(DIM, DIM, rngs=rngs)
        self.blocks = nnx.List([Block(rngs) for _ in range(BLOCKS)])
        self.head = Head(rngs)

    def __call__(self, x, context):
        context = self.text_embedding.linear_1(context)
        x = x + self.time_projection(x)
        for block in self.blocks:
            x = block(x, context)
        return self.head.proj(x)


def _block_paths(index: int) -> set[str]:
    attn = {f"blocks.{index}.{a}.{p}" for a in ("self_attn", "cross_attn") for p in PROJECTIONS}
    return attn | {f"blocks.{index}.ffn.fc1", f"blocks.{index}.ffn.fc2"}


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, DIM)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((2, 5, DIM)), jnp.float32)
    return ToyDiT(nnx.Rngs(0)), x, context


def _params(model) -> dict:
    return {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_blocks_except_block0_in_place(toy):
    model, x, context = toy
    params_before, out_before = _params(model), np.asarray(model(x, context))

    report = apply_quantization(model, QuantRule(include=("blocks.*",), exclude=("blocks.0.*",)))

    assert set(report.quantized) == _block_paths(1) | _block_paths(2)
    assert set(report.skipped) == _block_paths(0) | {
        "text_embedding.linear_1",
        "time_projection",
        "head.proj",
    }
    assert isinstance(model.blocks[2].cross_attn.o, QuantLinear)
    assert type(model.blocks[0].ffn.fc1) is Linear and type(model.head.proj) is Linear
    params_after = _params(model)
    assert params_after.keys() == params_before.keys()  # same paths: checkpoints still load
    assert all(np.array_equal(params_after[k], params_before[k]) for k in params_before)

    out = np.asarray(model(x, context))
    assert not np.array_equal(out, out_before)
    assert np.linalg.norm(out - out_before) < 0.5 * np.linalg.norm(out_before)  # 20 W4A4 layers
    assert np.array_equal(np.asarray(nnx.jit(lambda m, a, c: m(a, c))(model, x, context)), out)

    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, QuantLinear):
            layer.enabled = False
    assert np.array_equal(np.asarray(model(x, context)), out_before)


def test_first_matching_rule_wins_and_reapplying_is_a_no_op(toy):
    model, _, _ = toy
    rules = (
        QuantRule(include=("blocks.*.ffn.*",), config=QuantConfig(act_fmt=None)),
        QuantRule(include=("blocks.*", "head.*"), exclude=("blocks.0.*",)),
    )
    report = apply_quantization(model, rules)
    assert report.quantized["blocks.0.ffn.fc2"].act_fmt is None
    assert report.quantized["blocks.1.self_attn.q"] == QuantConfig()
    assert "head.proj" in report.quantized and "blocks.0.self_attn.q" in report.skipped
    assert "quantized" in str(report)

    again = apply_quantization(model, QuantRule())
    assert set(again.already_quantized) == set(report.quantized)
    assert set(again.quantized) == set(report.skipped)


def test_rule_errors():
    with pytest.raises(ValueError, match="tuple of patterns"):
        QuantRule(include="blocks.*")
    with pytest.raises(ValueError, match="at least one QuantRule"):
        apply_quantization(ToyDiT(nnx.Rngs(0)), [])
