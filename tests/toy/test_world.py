"""The toy world's renderer, prompt grammar and toy text encoder, checked against first principles."""

import numpy as np
import pytest

from configs import toy
from train.toy import world


def test_prompt_grammar_round_trips():
    prompts = world.all_prompts()
    assert len(prompts) == len(set(prompts)) == 64
    for p in prompts:
        c, s, d = world.parse_prompt(p)
        assert p == world.make_prompt(world.COLOURS[c], world.SHAPES[s], world.DIRECTIONS[d])


@pytest.mark.parametrize("bad", ["", "a red circle", "a purple circle moving left",
                                 "a red circle moving sideways", "the red circle moving left"])
def test_bad_prompts_are_rejected(bad):
    with pytest.raises(ValueError, match="not a toy prompt"):
        world.parse_prompt(bad)


def _draw(prompts, seed=0):
    return world.render(prompts, world.split_rng("test", seed))


def test_render_shape_range_and_determinism():
    prompts = world.all_prompts()
    v = _draw(prompts)
    assert v.shape == (64, 3, toy.FRAMES, toy.HEIGHT, toy.WIDTH) and v.dtype == np.float32
    assert v.min() >= -1.0 and v.max() <= 1.0
    np.testing.assert_array_equal(v, _draw(prompts))
    assert np.abs(v - _draw(prompts, seed=1)).max() > 0.5  # another seed: other nuisances
    held = world.render(prompts, world.split_rng("heldout", 0))
    assert np.abs(v - held).max() > 0.5  # splits are different streams


def _foreground(v):
    """Per-frame weight of each pixel: brightness above the (dark) background."""
    lum = v.max(axis=1)  # [B, F, H, W]
    return np.clip(lum - lum.min(axis=(2, 3), keepdims=True) - 0.2, 0, None)


def test_motion_follows_the_direction_word():
    prompts = [p for p in world.all_prompts() for _ in range(4)]
    v = _draw(prompts)
    w = _foreground(v)
    ys, xs = np.mgrid[: toy.HEIGHT, : toy.WIDTH]
    mass = w.sum(axis=(2, 3))
    cx, cy = (w * xs).sum(axis=(2, 3)) / mass, (w * ys).sum(axis=(2, 3)) / mass
    dx, dy = np.diff(cx, axis=1), np.diff(cy, axis=1)  # [B, F-1]
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for i, p in enumerate(prompts):
        ex, ey = expected[p.split()[-1]]
        step = ex * dx[i] + ey * dy[i]
        assert np.all(step > 0.7), (p, step)
        assert np.all(np.abs(ey * dx[i] + ex * dy[i]) < 0.3), p


def test_shapes_stay_whole_inside_every_frame():
    v = _draw(world.all_prompts() * 8)
    w = _foreground(v)
    border = np.concatenate([w[..., 0, :], w[..., -1, :], w[..., :, 0], w[..., :, -1]], axis=-1)
    assert border.max() < 0.05
    lum = v.max(axis=1)  # anti-aliased: the covered area barely depends on sub-pixel shifts
    mass = (lum - lum.min(axis=(2, 3), keepdims=True)).sum(axis=(2, 3))
    assert (np.ptp(mass, axis=1) / mass.mean(axis=1)).max() < 0.06


def test_colour_word_names_the_brightest_channels():
    prompts = world.all_prompts()
    v = _draw(prompts)
    inside = _foreground(v)[:, None] > 0.5
    rgb = (v * inside).sum(axis=(2, 3, 4)) / inside.sum(axis=(2, 3, 4))  # [B, 3]
    for p, c in zip(prompts, rgb, strict=True):
        colour = p.split()[1]
        if colour == "yellow":
            assert min(c[0], c[1]) - c[2] > 0.8
        else:
            top = {"red": 0, "green": 1, "blue": 2}[colour]
            assert c.argmax() == top and c[top] - np.delete(c, top).max() > 0.5


def test_encode_prompts_contract():
    prompts = ["a red circle moving left", world.NEGATIVE_PROMPT, "a blue bar moving up"]
    ctx, lengths = world.encode_prompts(prompts)
    assert ctx.shape == (3, world.CONTEXT_LEN, toy.TEXT_DIM) and ctx.dtype == np.float32
    np.testing.assert_array_equal(lengths, [4, 1, 4])
    for row, n in zip(ctx, lengths, strict=True):
        assert np.all(row[n:] == 0) and np.all(np.abs(row[:n]).sum(-1) > 0)
    table = world.embedding_table()
    np.testing.assert_array_equal(ctx[0, 0], table[world.VOCAB.index("red")])
    np.testing.assert_array_equal(ctx[1, 0], table[world.EOS])
    np.testing.assert_array_equal(world.negative_context(2), world.encode_prompts(["", ""])[0])
    # the same word gets the same embedding wherever it appears; different words differ
    assert np.allclose(ctx[0, 3], ctx[2, 3]) and not np.allclose(ctx[0, 0], ctx[2, 0])


def test_to_uint8_frames():
    v = _draw(["a green square moving down"])[0]
    frames = world.to_uint8_frames(v, scale=3)
    assert frames.shape == (toy.FRAMES, 3 * toy.HEIGHT, 3 * toy.WIDTH, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[:, ::3, ::3], np.floor((v.transpose(1, 2, 3, 0) + 1) * 127.5 + 0.5))
    with pytest.raises(ValueError, match="expected a video"):
        world.to_uint8_frames(v[None])


def test_modes_are_distinct_templates_and_renders_jitter_around_them():
    labels = world.prompt_labels(["a blue triangle moving up"] * world.NUM_MODES)
    modes = np.arange(world.NUM_MODES)
    templates = world.render_modes(labels, modes).reshape(world.NUM_MODES, -1)
    np.testing.assert_array_equal(templates, world.render_modes(labels, modes).reshape(world.NUM_MODES, -1))
    gaps = np.sqrt(((templates[:, None] - templates[None]) ** 2).mean(-1))
    assert gaps[~np.eye(world.NUM_MODES, dtype=bool)].min() > 0.04
    jittered = world.render_modes(labels, modes, world.split_rng("test", 0)).reshape(world.NUM_MODES, -1)
    own = np.sqrt(((jittered - templates) ** 2).mean(-1))
    assert 0 < own.max() < 0.06
