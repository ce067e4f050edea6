"""Session fixtures: tiny random experts, both layouts on disk, and their fp32 conversions."""

import shutil

import pytest
from convert_helpers import CFG, write_diffusers, write_official

from convert.snapshot import convert
from torch_refs import diffusers_dit, state_dict_numpy


@pytest.fixture(scope="session")
def experts():
    """The reference models: high noise (seed 0) and low noise (seed 1)."""
    return {"high": diffusers_dit(CFG, seed=0), "low": diffusers_dit(CFG, seed=1)}


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory, experts):
    root = tmp_path_factory.mktemp("snapshots")
    sds = {name: state_dict_numpy(m) for name, m in experts.items()}
    official = write_official(
        root / "official", {"high_noise_model": sds["high"], "low_noise_model": sds["low"]}, CFG
    )
    diffusers = write_diffusers(root / "diffusers", experts["high"], experts["low"])
    return {"official": official, "diffusers": diffusers}


@pytest.fixture(scope="session")
def converted(tmp_path_factory, snapshots):
    """Both layouts converted to float32 wanjax checkpoints."""
    out = tmp_path_factory.mktemp("converted")
    return {
        name: (convert(path, out / name, dtype="fp32", log=lambda s: None), out / name)
        for name, path in snapshots.items()
    }


@pytest.fixture
def copy_of(snapshots, tmp_path):
    """A private copy of one layout's snapshot, for tests that break it."""

    def make(layout: str):
        dst = tmp_path / f"src_{layout}"
        shutil.copytree(snapshots[layout], dst)
        return dst

    return make
