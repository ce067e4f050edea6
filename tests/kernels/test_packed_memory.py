"""Acceptance 4: one A14B expert with every block linear packed fits in 8.1 GB (from shapes)."""

from __future__ import annotations

from configs import a14b
from wanjax.memory import main as memory_main
from wanjax.quant.packed_model import packed_memory


def test_a14b_packed_expert_fits_in_8_1_gb():
    mem = packed_memory(a14b.EXPERT)
    per_block = 8 * 5120 * 5120 + 2 * 5120 * 13824  # self + cross q/k/v/o, FFN in and out
    assert mem.packed_params == 40 * per_block == 14_050_918_400
    assert mem.packed_linears == mem.packed_params * 9 // 16  # exactly 4.5 bits per value
    assert mem.packed_linears <= 8.1e9  # 7.90 GB
    assert mem.packed_extras < 0.02e9  # bf16 bias + float32 smoothing of the packed layers
    assert 0.4e9 < mem.protected < 0.5e9  # embeddings, time projection, head (bf16)


def test_memory_cli_has_packed_rows(capsys):
    assert memory_main(["--config", "tiny", "--mesh", "fsdp=1", "--packed"]) == 0
    out = capsys.readouterr().out
    assert "packed, not summed: HiF4 block linears" in out
