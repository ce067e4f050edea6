"""DMD at scale: sharded losses equal single-device ones; the A14B step lowers from shapes."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import a14b, dmd_a14b
from train.dmd_abstract import lower_dmd_step
from train.memory import dmd_rows
from wanjax.parallel.mesh import parse_mesh

HERE = Path(__file__).resolve().parent


def test_sharded_training_matches_single_device():
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    proc = subprocess.run([sys.executable, str(HERE / "sharded_dmd_check.py")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for one, many in zip(out["single"], out["sharded"], strict=True):
        for a, b in zip(one, many, strict=True):
            if a is not None:
                assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


def test_a14b_critic_step_lowers_for_8_devices_without_allocating():
    cfg = dataclasses.replace(dmd_a14b.DMD, batch_size=8)
    lowered = lower_dmd_step(a14b.EXPERT, cfg, parse_mesh("fsdp=8"), 8, dmd_a14b.LATENT_480P)
    text = lowered.as_text()
    assert "mhlo.num_partitions = 8" in text
    assert "sharding" in text


def test_a14b_memory_report_rows_match_arithmetic():
    rows, total = dmd_rows("fsdp=8", 8, "480p")
    by_name = dict(rows)
    fp32_per_device = 14_288_491_584 * 4 / 8
    gen = by_name["generator params (fp32 master)"]
    assert fp32_per_device <= gen <= fp32_per_device * 1.005
    assert by_name["generator AdamW moments (fp32 x2)"] == 2 * gen
    assert total == pytest.approx(sum(by_name.values()))
    assert np.isfinite(total)
    # handover x0_*: both critic experts in the high stage, one generator
    x0 = dict(dmd_rows("fsdp=8", 8, "480p", handover="x0_bridge")[0])
    assert x0["critic params (fp32)"] == 2 * by_name["critic params (fp32)"]
    assert x0["critic AdamW moments (fp32 x2)"] == 2 * by_name["critic AdamW moments (fp32 x2)"]
    assert x0["generator params (fp32 master)"] == gen


@pytest.mark.parametrize("gan,reversed_fakes,passes", [
    ("shared", False, 2), ("shared", True, 3), ("apart", False, 3), ("apart", True, 4)])
def test_a14b_memory_report_counts_the_gan_passes(gan, reversed_fakes, passes):
    """The GAN term keeps more passes with gradient alive (generator: student + critic over its
    sample; critic: generated + real (+ reversed) batch, + its own flow pass when apart) and adds
    the head: Linear(5120, 256) and Linear(256, 1) after a parameter-free LayerNorm, in fp32 with
    two AdamW moments."""
    plain = dict(dmd_rows("fsdp=8", 8, "480p")[0])
    rows, total = dmd_rows("fsdp=8", 8, "480p", gan=gan, gan_reversed=reversed_fakes)
    act = [v for k, v in rows if k.startswith("activations")]
    plain_act = [v for k, v in plain.items() if k.startswith("activations")]
    assert act == [passes * plain_act[0]]
    assert dict(rows)["GAN head (fp32 x3)"] == 3 * 4 * (5120 * 256 + 256 + 256 + 1)
    assert total == pytest.approx(sum(v for _, v in rows))
