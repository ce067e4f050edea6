"""Per-device memory budget of the Wan models on a mesh, from shapes alone (nothing is allocated).

    python -m wanjax.memory --config a14b --mesh fsdp=8 [--dtype bf16] [--train] [--size 1280*720]

Parameters and optimizer state are exact: `nnx.eval_shape` of the model, each leaf divided by the
mesh axes the sharding rules give it. Activations are an analytic estimate (stated as such): the
residual stream, one block's live intermediates with flash attention, and for training the per-block
checkpoints that `remat` keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wanjax.argtypes import positive_int
from wanjax.config import DiTConfig, Precision, get_preset
from wanjax.models.dit import WanDiT
from wanjax.parallel.mesh import AXES, MeshConfig, parse_mesh
from wanjax.parallel.rules import logical_axes, spec_for

GB = 1e9


@dataclasses.dataclass(frozen=True)
class _ShapeMesh:
    """Just enough of a mesh for `spec_for`: axis names and sizes."""

    axis_names: tuple[str, ...]
    shape: dict


def shape_mesh(cfg: MeshConfig, num_devices: int) -> _ShapeMesh:
    return _ShapeMesh(AXES, dict(zip(AXES, cfg.sizes(num_devices), strict=True)))


def param_bytes_per_device(dit: DiTConfig, mesh: _ShapeMesh, dtype=jnp.bfloat16) -> tuple[int, int]:
    """(total parameter count, bytes on the most loaded device) for one expert."""
    abstract = nnx.eval_shape(lambda: WanDiT(dit, Precision(dtype, dtype), rngs=nnx.Rngs(0)))
    total, per_device = 0, 0
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        name = ".".join(map(str, path))
        spec = spec_for(var.shape, logical_axes(name, len(var.shape)), mesh)
        split = 1
        for entry in spec:
            for axis in (entry,) if isinstance(entry, str) else (entry or ()):
                split *= mesh.shape[axis]
        n = math.prod(var.shape)
        total += n
        per_device += n * jnp.dtype(dtype).itemsize // split
    return total, per_device


def activation_estimate(dit: DiTConfig, tokens: int, mesh: _ShapeMesh, train: bool) -> int:
    """Bytes of live activations per device for one sample (estimate, see module docstring)."""
    seq = mesh.shape["sequence"] * mesh.shape["tensor"]  # tokens or heads split across these
    local = -(-tokens // mesh.shape["sequence"])
    d, f = dit.dim, dit.ffn_dim
    residual = local * d * 4  # fp32 stream
    block = local * (4 * d + f // mesh.shape["tensor"]) * 2 + tokens * d * 2 * 3 // seq
    if not train:
        return residual + block
    return dit.num_layers * residual + 3 * block  # remat checkpoints + one block fwd/bwd


def packed_rows(name: str, dit: DiTConfig) -> list[str]:
    """`--packed`: one expert with every block linear in HiF4 (4.5 bits), the rest in bf16.

    An alternative to the expert's params row, so these rows are not added to the sum."""
    from wanjax.quant.packed_model import packed_memory  # pulls in the Pallas kernels

    m = packed_memory(dit)
    return [
        f"| {name} packed, not summed: HiF4 block linears ({m.packed_params:,} values, 4.5 bits) | "
        f"{m.packed_linears / GB:.2f} | - |",
        f"| {name} packed, not summed: their bias + smoothing | {m.packed_extras / GB:.3f} | - |",
        f"| {name} packed, not summed: protected params (bf16) | {m.protected / GB:.2f} | - |",
    ]


def report(config: str, mesh_spec: str, num_devices: int | None, dtype: str, train: bool,
           size: str, frames: int, packed: bool = False) -> str:
    preset = get_preset(config)
    model = preset.MODEL
    experts = {"high": model.high, "low": model.low} if hasattr(model, "high") else {"dit": model}
    mcfg = parse_mesh(mesh_spec)
    n = num_devices or _device_count_for(mcfg)
    mesh = shape_mesh(mcfg, n)
    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    w, h = (int(v) for v in size.split("*"))
    dit = next(iter(experts.values()))
    vae_stride = 16 if dit.in_dim == 48 else 8
    tokens = ((frames - 1) // 4 + 1) * (h // vae_stride // 2) * (w // vae_stride // 2)
    lines = [f"# memory per device: {config}, mesh {mesh.shape} ({n} devices), params {dtype}, "
             f"{'training (AdamW, fp32 master + 2 moments)' if train else 'inference'}",
             f"# video {w}x{h}x{frames} -> {tokens} tokens per sample", "",
             "| part | total GB | per device GB |", "|---|---|---|"]
    grand = 0
    for name, cfg in experts.items():
        count, per_dev = param_bytes_per_device(cfg, mesh, dt)
        lines.append(f"| {name} params ({count:,}) | {count * jnp.dtype(dt).itemsize / GB:.2f} | "
                     f"{per_dev / GB:.2f} |")
        grand += per_dev
        if train:
            opt = per_dev // jnp.dtype(dt).itemsize * 4 * 3  # fp32 master + mu + nu
            lines.append(f"| {name} optimizer state | - | {opt / GB:.2f} |")
            grand += opt
    if packed:
        for name, cfg in experts.items():
            lines += packed_rows(name, cfg)
    act = activation_estimate(dit, tokens, mesh, train)
    lines.append(f"| activations (estimate, batch 1) | - | {act / GB:.2f} |")
    grand += act
    lines.append(f"| **sum** | - | **{grand / GB:.2f}** |")
    return "\n".join(lines)


def _device_count_for(cfg: MeshConfig) -> int:
    sizes = [cfg.data, cfg.fsdp, cfg.tensor, cfg.sequence]
    if -1 in sizes:
        raise ValueError("with an axis of size -1, pass --devices")
    return int(np.prod(sizes))


def _video_size(text: str) -> str:
    """'W*H' with positive sizes divisible by 16 (kept as text for `report`)."""
    try:
        w, h = (int(v) for v in text.split("*"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W*H, e.g. 1280*720, got {text!r}") from None
    if w < 16 or h < 16 or w % 16 or h % 16:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be multiples of 16")
    return text


def _frames(text: str) -> int:
    frames = positive_int(text)
    if (frames - 1) % 4:
        raise argparse.ArgumentTypeError(f"must be 4n+1 (1, 5, ..., 81), got {frames}")
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wanjax.memory", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="a14b", help="model preset (a14b, ti2v_5b, tiny)")
    parser.add_argument("--mesh", default="fsdp=8", help="mesh axes, e.g. fsdp=2,tensor=2,sequence=2")
    parser.add_argument("--devices", type=positive_int, default=None,
                        help="device count (None: the product of the mesh sizes)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="parameter dtype")
    parser.add_argument("--train", action="store_true", help="add optimizer state and remat checkpoints")
    parser.add_argument("--size", type=_video_size, default="1280*720", help="video W*H")
    parser.add_argument("--frames", type=_frames, default=81, help="video frames (4n+1)")
    parser.add_argument("--packed", action="store_true",
                        help="add HiF4-packed inference rows (bytes per expert, from shapes)")
    args = parser.parse_args(argv)
    try:
        print(report(args.config, args.mesh, args.devices, args.dtype, args.train, args.size,
                     args.frames, args.packed))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    sys.exit(main())
