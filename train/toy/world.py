"""The toy world: prompts, a procedural renderer of moving shapes and a fixed toy text encoder.

A prompt names three attributes, "a red circle moving left"; a video is that shape sliding across
a black frame, `[3, F, H, W]` float32 in [-1, 1]. Within a prompt, videos vary by mode (the
shape's lane across the motion and its size: NUM_MODES = 6) and by a little continuous jitter
(sub-pixel position, brightness). This is the 2-D "Gaussians on a circle" of
dmd_notes section 6 in video form: a sampler that averages modes (a one-step flow teacher)
produces a blurred blob, a mode-seeking one (DMD) sharp videos.

Determinism: a video depends only on its prompt and the `numpy.random.Generator` it is drawn
with; `split_rng(split, *ids)` gives disjoint streams for the train / held-out splits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int

from configs import toy

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("square", "circle", "triangle", "bar")
DIRECTIONS = ("left", "right", "up", "down")
ATTRIBUTES = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS}

# RGB in [0, 1] at full brightness.
_RGB = np.array(
    [[1.0, 0.15, 0.1], [0.15, 0.85, 0.2], [0.2, 0.35, 1.0], [1.0, 0.85, 0.1]], np.float32
)
# Unit step per frame (dx, dy) with y pointing down the image.
_STEP = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], np.float32)
# Half extents (x, y) of each shape in units of its size s, plus pixels for the anti-aliasing
# ramp beyond the triangle's sharp corners.
_SQUARE_HALF = 0.9
_TRIANGLE_INRADIUS = 0.65
_BAR_HALF = (1.25, 0.5)
_EXTENT = np.array(
    [[_SQUARE_HALF] * 2, [1.0, 1.0], [3**0.5 * _TRIANGLE_INRADIUS, 1.5 * _TRIANGLE_INRADIUS],
     _BAR_HALF],
    np.float32,
)
_CORNER_PAD = np.array([[0.0, 0.0], [0.0, 0.0], [0.37, 0.5], [0.0, 0.0]], np.float32)

# Within-prompt variety: discrete modes plus a little continuous jitter, so that each prompt's
# distribution is a mixture of 3 lanes x 2 sizes = 6 sharp modes. A sampler that averages modes
# produces a blur; one that drops modes loses diversity; both are measurable.
LANES = (-4.0, 0.0, 4.0)  # pixels across the motion from the frame centre: one patch apart
OFFSETS = (0.0,)  # pixels along the motion: where the path's midpoint lies
SIZES = (1.8, 2.2)  # s: circle radius, ~ half-side of the others
# One DiT patch (4 pixels) per frame: a frame's tokens reappear one token further on in the
# next frame, a pattern that the tiny teacher's attention picks up within minutes of training
# (at 2 pixels per frame it did not, and its frames drifted apart).
SPEED = 4.0  # pixels per frame
POSITION_JITTER = 0.1  # +- pixels, uniform, per axis
BRIGHTNESS_RANGE = (0.9, 1.0)
NUM_MODES = len(LANES) * len(OFFSETS) * len(SIZES)

# Named streams: a split's videos never share a random stream with another split's.
SPLITS = {"train": 0, "classifier": 1, "heldout": 2, "reference": 3, "test": 4}

VOCAB = (*COLOURS, *SHAPES, *DIRECTIONS, "<eos>")
EOS = len(VOCAB) - 1
NEGATIVE_PROMPT = ""  # encodes to the lone <eos> token, like an empty prompt through UMT5
CONTEXT_LEN = 4  # colour, shape, direction, <eos>
EMBEDDING_SEED = 20250417


# ----------------------------------------------------------------------------------------------
# Prompts


def make_prompt(colour: str, shape: str, direction: str) -> str:
    return f"a {colour} {shape} moving {direction}"


def all_prompts() -> list[str]:
    """All 64 prompts, colour-major."""
    return [make_prompt(*a) for a in itertools.product(COLOURS, SHAPES, DIRECTIONS)]


def parse_prompt(prompt: str) -> tuple[int, int, int]:
    """`(colour, shape, direction)` indices; ValueError for anything outside the grammar."""
    words = prompt.split()
    if (
        len(words) != 5 or words[0] != "a" or words[3] != "moving"
        or words[1] not in COLOURS or words[2] not in SHAPES or words[4] not in DIRECTIONS
    ):
        raise ValueError(
            f"not a toy prompt: {prompt!r}; expected 'a <colour> <shape> moving <direction>' "
            f"with colour in {COLOURS}, shape in {SHAPES}, direction in {DIRECTIONS}"
        )
    return COLOURS.index(words[1]), SHAPES.index(words[2]), DIRECTIONS.index(words[4])


def prompt_labels(prompts: Sequence[str]) -> Int[np.ndarray, "b 3"]:
    """`[B, 3]` attribute indices (colour, shape, direction) of each prompt."""
    return np.array([parse_prompt(p) for p in prompts], np.int32).reshape(len(prompts), 3)


# ----------------------------------------------------------------------------------------------
# Rendering


def split_rng(split: str, *ids: int) -> np.random.Generator:
    """The random stream of `split` (see SPLITS) and integer ids, e.g. a seed and a step."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    return np.random.default_rng([SPLITS[split], *ids])


def _sdf(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) to each sample's shape; all inputs broadcast."""
    ax, ay = np.abs(dx), np.abs(dy)
    square = np.maximum(ax, ay) - _SQUARE_HALF * s
    circle = np.sqrt(dx * dx + dy * dy) - s
    # Equilateral triangle, apex up (y points down): the three edge normals and the inradius r,
    # the incentre r / 2 below the centre so that the bounding box (height 3 r) is centred.
    r = _TRIANGLE_INRADIUS * s
    ty = dy - 0.5 * r
    triangle = np.maximum(np.maximum(ty, 0.866 * dx - 0.5 * ty), -0.866 * dx - 0.5 * ty) - r
    bar = np.maximum(ax - _BAR_HALF[0] * s, ay - _BAR_HALF[1] * s)
    return np.choose(shape, [square, circle, triangle, bar])


def render(
    prompts: Sequence[str],
    rng: np.random.Generator,
    *,
    frames: int = toy.FRAMES,
    height: int = toy.HEIGHT,
    width: int = toy.WIDTH,
) -> Float[np.ndarray, "b 3 f h w"]:
    """Draws one video per prompt: the named shape and colour sliding in the named direction.

    Each video picks one of the prompt's NUM_MODES modes uniformly, then jitters it. Shapes are
    anti-aliased (coverage = clip(0.5 - signed distance, 0, 1)) and every frame holds the whole
    shape.
    """
    labels = prompt_labels(prompts)
    mode = rng.integers(0, NUM_MODES, len(prompts))
    return render_modes(labels, mode, rng, frames=frames, height=height, width=width)


def render_modes(
    labels: Int[np.ndarray, "b 3"],
    mode: Int[np.ndarray, " b"],
    rng: np.random.Generator | None = None,
    *,
    frames: int = toy.FRAMES,
    height: int = toy.HEIGHT,
    width: int = toy.WIDTH,
) -> Float[np.ndarray, "b 3 f h w"]:
    """Renders attribute labels `[B, 3]` in modes `[B]` (lane, offset, size: see NUM_MODES).

    With `rng=None` the jitter is zero and brightness full: the mode's clean template.
    """
    b = len(labels)
    colour, shape, direction = labels[:, 0], labels[:, 1], labels[:, 2]
    lane, offset, size_i = np.unravel_index(mode, (len(LANES), len(OFFSETS), len(SIZES)))
    size = np.asarray(SIZES, np.float32)[size_i]
    if rng is None:
        jitter, brightness = np.zeros((b, 2), np.float32), np.ones(b, np.float32)
    else:
        jitter = rng.uniform(-POSITION_JITTER, POSITION_JITTER, (b, 2)).astype(np.float32)
        brightness = rng.uniform(*BRIGHTNESS_RANGE, b).astype(np.float32)

    along = _STEP[direction]  # [B, 2]
    across = np.abs(along[:, ::-1])
    dims = np.array([width, height], np.float32)
    middle = (
        (dims - 1) / 2 + np.asarray(LANES, np.float32)[lane, None] * across
        + np.asarray(OFFSETS, np.float32)[offset, None] * along + jitter
    )
    t = np.arange(frames, dtype=np.float32) - (frames - 1) / 2
    centre = middle[:, None, :] + t[None, :, None] * SPEED * along[:, None, :]  # [B, F, 2]
    extent = (_EXTENT[shape] * size[:, None] + _CORNER_PAD[shape])[:, None]
    if np.any(centre - extent < 0.5) or np.any(centre + extent > dims - 1.5):
        raise ValueError(f"frames of {height}x{width} are too small for {frames} frames of motion")

    ys, xs = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    dx = xs[None, None, None, :] - centre[:, :, 0, None, None]  # [B, F, 1, W]
    dy = ys[None, None, :, None] - centre[:, :, 1, None, None]  # [B, F, H, 1]
    dx, dy = np.broadcast_arrays(dx, dy)
    sdf = _sdf(shape[:, None, None, None], dx, dy, size[:, None, None, None])
    cover = np.clip(0.5 - sdf, 0.0, 1.0)  # [B, F, H, W]

    rgb = _RGB[colour] * brightness[:, None]  # [B, 3]
    img = cover[:, None] * rgb[:, :, None, None, None]  # on black
    return (2.0 * img - 1.0).astype(np.float32)


def to_uint8_frames(video: Float[np.ndarray, "3 f h w"], scale: int = 8) -> np.ndarray:
    """`[F, H*scale, W*scale, 3]` uint8 frames (nearest upscaling) for a video file or a grid."""
    video = np.asarray(video, np.float32)
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got shape {video.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    frames = np.clip((video + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def save_mp4(path: str, video: Float[np.ndarray, "3 f h w"], scale: int = 8, fps: int = 4) -> None:
    """Writes one video as an mp4 (libx264 via imageio-ffmpeg) for humans to look at."""
    import imageio.v2 as imageio

    # imageio's ffmpeg writer wants sizes divisible by 16 (macro blocks); 16*scale always is.
    imageio.mimwrite(path, list(to_uint8_frames(video, scale)), fps=fps, macro_block_size=1)


# ----------------------------------------------------------------------------------------------
# Toy text encoder


def embedding_table(text_dim: int = toy.TEXT_DIM) -> Float[np.ndarray, "v d"]:
    """The fixed `[len(VOCAB), text_dim]` word embeddings: seeded normals, never trained."""
    return np.random.default_rng(EMBEDDING_SEED).standard_normal((len(VOCAB), text_dim)).astype(
        np.float32
    )


def tokenize(prompt: str) -> list[int]:
    """Word ids ending in <eos>; the empty (negative) prompt is `[<eos>]`."""
    if prompt == NEGATIVE_PROMPT:
        return [EOS]
    c, s, d = parse_prompt(prompt)
    return [c, len(COLOURS) + s, len(COLOURS) + len(SHAPES) + d, EOS]


def encode_prompts(
    prompts: Sequence[str], text_dim: int = toy.TEXT_DIM
) -> tuple[Float[np.ndarray, "b l d"], Int[np.ndarray, " b"]]:
    """`(context [B, 4, text_dim], lengths [B])`, rows at or beyond a prompt's length zero.

    The same contract as the real text encoder's output; the DiT zero-pads to its `text_len`.
    """
    table = embedding_table(text_dim)
    context = np.zeros((len(prompts), CONTEXT_LEN, text_dim), np.float32)
    lengths = np.zeros((len(prompts),), np.int32)
    for i, prompt in enumerate(prompts):
        ids = tokenize(prompt)
        context[i, : len(ids)] = table[ids]
        lengths[i] = len(ids)
    return context, lengths


def negative_context(batch: int, text_dim: int = toy.TEXT_DIM) -> Float[np.ndarray, "b l d"]:
    """The empty prompt's context `[B, 4, text_dim]` for classifier-free guidance."""
    return encode_prompts([NEGATIVE_PROMPT] * batch, text_dim)[0]
