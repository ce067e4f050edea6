"""`python -m train.memory`: per-device memory of A14B DMD training on a mesh, from shapes alone.

For one phased stage (one expert per role) the device holds: the generator (fp32 master weights,
AdamW's two moments, the EMA copy), the critic (fp32 + two moments), two frozen bf16 networks
(stage 1: both teacher experts, since its noise levels reach below the boundary; stage 2: the low
teacher and the frozen stage-1 generator), and the activations of one sample with per-block
remat. Parameter and optimizer rows are exact (eval_shape + sharding rules); activations are an
analytic estimate, labelled as such. Joint mode doubles every trainable row.

With the GAN term (`--gan`), passes with gradient that are alive together add their
activations: the generator's update backpropagates through the student and the critic's pass over
its sample (2 samples' worth), and the critic's update over its generated and real batch (2, 3
with reversed real samples; its own flow pass adds 1 when the GAN has its own noise levels).
"""

from __future__ import annotations

import argparse
import sys
from typing import Literal

import jax

from configs import a14b
from train.dmd_config import HANDOVERS, MOE_MODES
from train.gan import init_head
from wanjax.memory import GB, activation_estimate, param_bytes_per_device, shape_mesh
from wanjax.parallel.mesh import parse_mesh

LAYOUTS = {  # name -> (mesh spec, devices, memory per device in GB)
    "8xH100": ("fsdp=8", 8, 80),
    "8xH100-sp4": ("fsdp=2,sequence=4", 8, 80),
    "8xH200-sp4": ("fsdp=2,sequence=4", 8, 141),
    "v5p-128": ("fsdp=16,sequence=4", 64, 95),  # 64 chips (128 TensorCores), 95 GB HBM each
}
SIZES = {"480p": (832, 480), "720p": (1280, 720)}
GanMode = Literal["off", "shared", "apart"]


def activation_passes(gan: GanMode = "off", reversed_fakes: bool = False) -> int:
    """Samples' worth of remat activations alive at once, per sample of the batch: the larger
    of the generator's and the critic's update. `shared`: the GAN shares the DMD term's noise
    levels (one critic pass); `apart`: `--gan-noise-shift` (the critic's flow pass runs apart)."""
    if gan == "off":
        return 1
    generator = 2  # the student, and the critic's pass over the student's sample
    critic = 2 + int(reversed_fakes) + int(gan == "apart")
    return max(generator, critic)


def dmd_rows(mesh_spec: str, devices: int, size: str, frames: int = 81,
             moe_mode: str = "phased", batch_per_device: int = 1, gan: GanMode = "off",
             gan_reversed: bool = False, gan_hidden: int = 256, handover: str = "bridge"
             ) -> tuple[list[tuple[str, float]], float]:
    """Per-device bytes of one DMD stage's state. `handover='x0_*'` (phased): the high stage's
    critic is routed over the whole noise range, so it holds both critic experts."""
    mesh = shape_mesh(parse_mesh(mesh_spec), devices)
    dit = a14b.EXPERT
    _, bf16 = param_bytes_per_device(dit, mesh)  # bf16 bytes on the most loaded device
    fp32 = 2 * bf16
    per_role = 2 if moe_mode == "joint" else 1
    critics = 2 if moe_mode == "joint" or handover != "bridge" else 1
    w, h = SIZES[size]
    tokens = ((frames - 1) // 4 + 1) * (h // 16) * (w // 16)
    rows = [
        ("generator params (fp32 master)", per_role * fp32),
        ("generator AdamW moments (fp32 x2)", per_role * 2 * fp32),
        ("generator EMA (fp32)", per_role * fp32),
        ("critic params (fp32)", critics * fp32),
        ("critic AdamW moments (fp32 x2)", critics * 2 * fp32),
        # Both teacher experts in joint mode and in phased stage 1 (its noise levels reach below
        # the boundary); phased stage 2 holds the low teacher and the frozen stage-1 generator.
        ("frozen bf16: teacher experts (+ stage-1 generator in stage 2)", 2 * bf16),
    ]
    passes = activation_passes(gan, gan_reversed)
    if gan != "off":  # the head, replicated: fp32 params and AdamW's two moments
        head = jax.eval_shape(lambda: init_head(jax.random.key(0), dit.dim, gan_hidden))
        rows.append(("GAN head (fp32 x3)", 3 * sum(x.size * x.dtype.itemsize
                                                    for x in jax.tree.leaves(head))))
    label = f"x{batch_per_device} sample" + (f", x{passes} with the GAN" if passes > 1 else "")
    rows.append((f"activations (remat, estimate, {label})",
                 batch_per_device * passes * activation_estimate(dit, tokens, mesh, train=True)))
    return rows, sum(v for _, v in rows)


def report(layouts=tuple(LAYOUTS), sizes=tuple(SIZES), moe_mode: str = "phased",
           gan: GanMode = "off", gan_reversed: bool = False, handover: str = "bridge") -> str:
    kw = {"moe_mode": moe_mode, "gan": gan, "gan_reversed": gan_reversed, "handover": handover}
    names = [r for r, _ in dmd_rows("fsdp=8", 8, "480p", **kw)[0]]
    gan_text = "" if gan == "off" else f", GAN {gan}" + (" with reversed fakes" if gan_reversed else "")
    mode = moe_mode + ("" if handover == "bridge" else f", handover {handover}")
    out = [f"# A14B DMD ({mode}{gan_text}) memory per device, one sample per data-parallel "
           "group", "", "| layout | mesh | size | " + " | ".join(names) + " | total GB | fits |",
           "|" + "---|" * (len(names) + 5)]
    for name in layouts:
        spec, devices, capacity = LAYOUTS[name]
        for size in sizes:
            rows, total = dmd_rows(spec, devices, size, **kw)
            cells = " | ".join(f"{v / GB:.2f}" for _, v in rows)
            fits = "yes" if total / GB < 0.9 * capacity else "no"
            out.append(f"| {name} ({capacity} GB) | {spec} | {size} | {cells} | "
                       f"{total / GB:.2f} | {fits} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", action="append", choices=sorted(LAYOUTS),
                   help="device layouts (default: all)")
    p.add_argument("--size", action="append", choices=sorted(SIZES), help="default: both")
    p.add_argument("--moe-mode", choices=MOE_MODES, default="phased",
                   help="phased: one expert per role at a time (default: %(default)s)")
    p.add_argument("--handover", choices=HANDOVERS, default="bridge",
                   help="phased: x0_* routes the high stage's critic over the whole noise range "
                   "(both critic experts held; train.dmd --handover) (default: %(default)s)")
    p.add_argument("--gan", choices=("off", "shared", "apart"), default="off",
                   help="the GAN term: shared (on the DMD term's noise levels) or apart "
                   "(--gan-noise-shift); adds the head and the passes it keeps alive "
                   "(default: %(default)s)")
    p.add_argument("--gan-reversed", action="store_true",
                   help="with --gan: reversed real samples as extra fakes (--gan-reversed-weight)")
    args = p.parse_args(argv)
    if args.gan_reversed and args.gan == "off":
        p.error("--gan-reversed needs --gan shared or --gan apart")
    if args.handover != "bridge" and args.moe_mode != "phased":
        p.error(f"--handover {args.handover} is a phased setting")
    print(report(tuple(args.layout or LAYOUTS), tuple(args.size or SIZES), args.moe_mode,
                 args.gan, args.gan_reversed, args.handover))
    return 0


if __name__ == "__main__":
    sys.exit(main())
