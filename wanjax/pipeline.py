"""Prompt to video: text encoder -> dual-expert DiT sampling -> VAE decode.

One object holds the three models of a converted checkpoint (or the toy world's stand-ins) and
a cache of compiled samplers keyed by (sampler settings), so a second prompt, seed or batch of the
same shape runs without recompiling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wanjax.io import checkpoint
from wanjax.loading import load_dit_module
from wanjax.sampling.loop import SampleConfig, dit_apply, make_sampler, make_swapping_sampler

SIZES = {"720p": "1280*720", "720p-portrait": "720*1280", "480p": "832*480",
         "480p-portrait": "480*832"}


@dataclasses.dataclass
class Pipeline:
    graphdef_high: nnx.GraphDef
    params_high: nnx.State
    graphdef_low: nnx.GraphDef
    params_low: nnx.State
    encode_text: Callable[[Sequence[str]], np.ndarray]  # -> [B, L, text_dim], zero rows padded
    decode: Callable[[np.ndarray], np.ndarray]  # latents -> video [B, 3, T, H, W] in [-1, 1]
    latent_shape: Callable[[int, int, int], tuple[int, ...]]  # (frames, height, width) -> C,F,H,W
    world: str  # 'wan' or 'toy'
    default_sampling: SampleConfig
    _samplers: dict = dataclasses.field(default_factory=dict)

    def sampler(self, cfg: SampleConfig, offload: str = "none"):
        key = (cfg, offload)
        if key not in self._samplers:
            ah, al = dit_apply(self.graphdef_high), dit_apply(self.graphdef_low)
            if offload == "swap":
                device = jax.devices()[0]
                host = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host") \
                    if "pinned_host" in _memory_kinds(device) else \
                    jax.sharding.SingleDeviceSharding(device)
                self._samplers[key] = make_swapping_sampler(
                    ah, al, cfg, host, jax.sharding.SingleDeviceSharding(device))
            else:
                self._samplers[key] = make_sampler(ah, al, cfg)
        return self._samplers[key]

    def generate(self, prompts: Sequence[str], negative: str, cfg: SampleConfig, seed: int,
                 frames: int, height: int, width: int, offload: str = "none") -> dict:
        """Returns {'latents', 'video'} for one batch of prompts (noise from `seed`)."""
        shape = self.latent_shape(frames, height, width)
        noise = jax.random.normal(jax.random.PRNGKey(seed), (len(prompts), *shape), jnp.float32)
        ctx = jnp.asarray(self.encode_text(list(prompts)))
        guided = cfg.guide_high != 1.0 or cfg.guide_low != 1.0
        neg = jnp.asarray(self.encode_text([negative] * len(prompts))) if guided else None
        latents = self.sampler(cfg, offload)(self.params_high, self.params_low, noise, ctx, neg,
                                             jax.random.PRNGKey(seed + 1))
        latents = np.asarray(latents)
        return {"latents": latents, "video": np.asarray(self.decode(latents))}


def _memory_kinds(device) -> set[str]:
    try:
        return {m.kind for m in device.addressable_memories()}
    except Exception:  # noqa: BLE001 - older runtimes have no memory API
        return set()


def parse_size(size: str) -> tuple[int, int]:
    """'W*H' (or a preset name) -> (width, height)."""
    size = SIZES.get(size, size)
    try:
        w, h = (int(v) for v in size.lower().replace("x", "*").split("*"))
    except ValueError:
        raise ValueError(f"size must be W*H (e.g. 1280*720) or one of {sorted(SIZES)}, "
                         f"got {size!r}") from None
    return w, h


def student_sample_config(meta: dict) -> SampleConfig | None:
    student = meta.get("student")
    if not student:
        return None
    sc = dict(student["sample_config"])
    if sc.get("timesteps") is not None:
        sc["timesteps"] = tuple(sc["timesteps"])
    return SampleConfig(**sc)


CALIBRATED = "calibration.json"  # written by `python -m train.calibrate`


def _is_toy(meta: dict) -> bool:
    comps = meta["components"]
    return meta.get("world") == "toy" or (
        checkpoint.dit_config_from_json(comps["dit_high"]["config"]).in_dim == 3
        and "text_encoder" not in comps)


def _calibrated_source(path: Path, source: str | None) -> Path:
    """The DMD student a calibrated student was made from (it names the teacher's assets)."""
    if not source or not Path(source, checkpoint.MANIFEST).is_file():
        raise ValueError(f"{path} was calibrated from the student {source!r}, which is not "
                         "readable from here: sampling needs it for the text encoder, VAE and "
                         "tokenizer of its teacher")
    return Path(source)


def load_pipeline(path: str | Path, dtype=None) -> Pipeline:
    """A pipeline from a converted Wan checkpoint, a DMD student, a calibrated (HiF4) student
    from `train.calibrate`, or a toy-world checkpoint.

    A DMD student holds only the two DiT experts; its text encoder, VAE and tokenizer come from
    the teacher it was distilled from (recorded in its manifest). A calibrated student runs its
    packed HiF4 layers on the HiF4 matmul kernels (`kernels_pallas`, backend by platform) and
    other formats as fake quantization; `dtype` does not apply to it."""
    path = Path(path)
    calib = None
    if (path / CALIBRATED).is_file():
        from train.calibration.manifest import read_manifest

        calib = read_manifest(path)
    source = path if calib is None else _calibrated_source(path, calib.source.get("student"))
    meta = checkpoint.read_manifest(source)
    toy = _is_toy(meta)
    assets = None if toy else _asset_source(source, meta)  # fails before the experts load
    if calib is not None:
        from train.calibration.manifest import load_quantized_student

        model, default, _ = load_quantized_student(
            path, "kernel" if calib.storage == "packed" else "fake")
        high, low = model.high, model.low
    else:
        high, low = load_dit_module(path, "high", dtype), load_dit_module(path, "low", dtype)
        default = student_sample_config(meta)
    gh, ph = nnx.split(high)
    gl, pl = nnx.split(low)
    if toy:
        from configs import toy as toy_cfg
        from train.toy import world as toy_world

        def toy_shape(frames, height, width):
            return (3, toy_cfg.FRAMES, toy_cfg.HEIGHT, toy_cfg.WIDTH)

        default = default or SampleConfig(num_steps=toy_cfg.TEACHER_STEPS,
                                          shift=toy_cfg.SAMPLE_SHIFT,
                                          guide_high=toy_cfg.GUIDE_SCALE_HIGH,
                                          guide_low=toy_cfg.GUIDE_SCALE_LOW,
                                          boundary=toy_cfg.BOUNDARY)
        return Pipeline(gh, ph, gl, pl, lambda p: toy_world.encode_prompts(p)[0],
                        lambda z: np.clip(z, -1.0, 1.0), toy_shape, "toy", default)
    return _wan_pipeline(assets, (gh, ph, gl, pl), high.cfg, default, dtype)


def _asset_source(path: Path, meta: dict) -> Path:
    """The checkpoint that holds the text encoder, VAE and tokenizer for `path`'s experts."""
    from wanjax.loading import tokenizer_path

    def complete(p: Path, m: dict) -> bool:
        return all(c in m["components"] for c in ("text_encoder", "vae")) and \
            tokenizer_path(p) is not None

    if complete(path, meta):
        return path
    teacher = (meta.get("student") or {}).get("teacher")
    if teacher and Path(teacher, checkpoint.MANIFEST).is_file():
        if complete(Path(teacher), checkpoint.read_manifest(teacher)):
            return Path(teacher)
    where = f" nor in its teacher {teacher}" if teacher else ""
    raise ValueError(f"{path} has no text encoder, VAE and tokenizer{where}: sampling needs the "
                     f"full snapshot converted (python -m convert.wan SRC DST)")


def _wan_pipeline(assets: Path, parts, dit_cfg, default, dtype) -> Pipeline:
    from wanjax.loading import load_text_encoder, load_vae, tokenizer_path
    from wanjax.text.encode import TextEncoder, encode_prompts
    from wanjax.text.tokenizer import Tokenizer

    tokenizer = Tokenizer(tokenizer_path(assets))
    encoder = TextEncoder(load_text_encoder(assets, dtype))
    vae = load_vae(assets)
    stride_t, stride_s = 4, vae.cfg.spatial_factor

    def encode(prompts):
        return np.asarray(encode_prompts(encoder, tokenizer, prompts, dit_cfg.text_len).context)

    def shape(frames, height, width):
        if (frames - 1) % 4:
            raise ValueError(f"frames must be 4n+1 (e.g. 81), got {frames}")
        if height % 16 or width % 16:
            raise ValueError(f"size {width}*{height} must be divisible by 16")
        return (dit_cfg.in_dim, (frames - 1) // stride_t + 1, height // stride_s,
                width // stride_s)

    default = default or SampleConfig()
    return Pipeline(*parts, encode, lambda z: np.asarray(vae.decode(jnp.asarray(z))), shape,
                    "wan", default)
