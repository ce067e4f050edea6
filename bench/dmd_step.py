"""Throughput of the toy DMD train step: how long `python -m train.dmd_report` takes here.

    python -m bench.dmd_step [--student-steps 1000] [--batch-size 32] [--repeats 10] [--json out.json]

Times the jitted critic and generator updates of the first phased stage of the toy preset (the
committed toy teacher, its batch of 32 unless changed) and prints seconds per update, the
critic iterations per second they give (a generator update every `critic_ratio` iterations, as
in training), XLA's FLOP count per update and the GFLOP/s reached. Set `XLA_FLAGS` to compare
compiler settings on the same machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from bench.results import add_json_arg, write_json
from bench.timing import median_time
from configs import dmd_toy
from train import dmd, trainer
from train.data import pad_negative
from train.dmd_step import init_state
from train.world import toy_world
from wanjax.argtypes import positive_int


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", 0.0))


def bench_stage(student_steps: tuple[float, ...], batch_size: int, repeats: int) -> dict:
    cfg = dataclasses.replace(dmd_toy.DMD, raw_timesteps=student_steps, batch_size=batch_size)
    nets = dmd.load_networks(str(dmd_toy.TEACHER), cfg)
    world = toy_world()
    stage = cfg.stages()[0]
    gen0, critic0, real, frozen_gen = trainer._stage_params(cfg, stage, nets, {})
    gen_step, critic_step = trainer.compiled_steps(
        cfg, stage, nets.graphdef_train, nets.graphdef_real, tuple(world.latent_shape))
    prompts = [world.prompts[i % len(world.prompts)] for i in range(batch_size)]
    ctx = jnp.asarray(world.contexts.encode(prompts))
    batch = (ctx, pad_negative(jnp.asarray(world.contexts.negative(batch_size)), ctx))
    frozen = (real, frozen_gen)
    holder = {"state": init_state(cfg, gen0, critic0, jax.random.PRNGKey(0), None)}
    row = {"stage": stage, "batch_size": batch_size, "critic_ratio": cfg.critic_ratio}
    for name, step in (("critic", critic_step), ("gen", gen_step)):
        start = time.perf_counter()
        compiled = step.lower(holder["state"], frozen, batch, None).compile()
        row[f"{name}_compile_s"] = time.perf_counter() - start
        row[f"{name}_gflop"] = _flops(compiled) / 1e9

        def update(step=step):
            # the state is donated: each call consumes the last one's output
            holder["state"], metrics = step(holder["state"], frozen, batch, None)
            jax.block_until_ready(metrics)

        # warm-up: twice, since init_state's leaves can differ in weak type from an update's
        # output, so the second call may compile again (with --repeats 1 it was timed)
        update()
        update()
        row[f"{name}_s"] = median_time(update, repeats)
    per_iteration = row["critic_s"] + row["gen_s"] / cfg.critic_ratio
    row["iterations_per_s"] = 1.0 / per_iteration
    row["gflop_per_s"] = (row["critic_gflop"] + row["gen_gflop"] / cfg.critic_ratio) / per_iteration
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dmd_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student-steps", action="append", default=None,
                        help="raw student timesteps, e.g. 1000,500 (repeatable; default: 1000 "
                        "and 1000,500, the 1- and 2-step students' first stages)")
    parser.add_argument("--batch-size", type=positive_int, default=dmd_toy.DMD.batch_size,
                        help="samples per update (%(default)s, the toy preset's)")
    parser.add_argument("--repeats", type=positive_int, default=10,
                        help="timed updates of each kind (%(default)s)")
    add_json_arg(parser)
    args = parser.parse_args(argv)
    grids = args.student_steps or ["1000", "1000,500"]
    try:
        parsed = [tuple(float(t) for t in g.split(",")) for g in grids]
        for steps in parsed:
            dataclasses.replace(dmd_toy.DMD, raw_timesteps=steps)  # validates the grid
    except ValueError as e:
        parser.error(f"--student-steps: {e}")
    print(f"jax {jax.__version__} on {jax.default_backend()}; toy DMD, fp32, median of "
          f"{args.repeats}")
    print("| student steps | stage | critic s | gen s | iterations/s | critic GFLOP | gen GFLOP "
          "| GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for grid, steps in zip(grids, parsed, strict=True):
        r = {"student_steps": grid, **bench_stage(steps, args.batch_size, args.repeats)}
        rows.append(r)
        print(f"| {grid} | {r['stage']} | {r['critic_s']:.3f} | {r['gen_s']:.3f} | "
              f"{r['iterations_per_s']:.2f} | {r['critic_gflop']:.1f} | {r['gen_gflop']:.1f} | "
              f"{r['gflop_per_s']:.1f} |", flush=True)
    if args.json:
        write_json(args.json, "bench.dmd_step", rows, args)


if __name__ == "__main__":
    main()
