"""`train.data.prompt_batches`: epochs, process shards, and a prefix that does not depend on the
run length (what extending a finished `train.dmd` run relies on)."""

import collections

import pytest

from train.data import prompt_batches

PROMPTS = [f"prompt {i}" for i in range(48)]


def _flat(ds, steps):
    return [str(p) for i in range(steps) for p in ds[i]]


def test_every_epoch_holds_every_prompt_once_in_a_new_order():
    seen = _flat(prompt_batches(PROMPTS, 16, seed=0, num_steps=9), 9)  # 3 epochs
    epochs = [seen[i:i + 48] for i in range(0, 144, 48)]
    assert all(collections.Counter(e) == collections.Counter(PROMPTS) for e in epochs)
    assert epochs[0] != epochs[1] and epochs[0] != PROMPTS


def test_the_prefix_does_not_depend_on_the_run_length():
    short = prompt_batches(PROMPTS, 16, seed=3, num_steps=4)
    long = prompt_batches(PROMPTS, 16, seed=3, num_steps=400)
    assert _flat(short, 4) == _flat(long, 4)
    assert _flat(prompt_batches(PROMPTS, 16, seed=4, num_steps=4), 4) != _flat(short, 4)


def test_process_shards_split_the_global_batch():
    whole = prompt_batches(PROMPTS, 16, seed=0, num_steps=5, process_index=0, process_count=1)
    parts = [prompt_batches(PROMPTS, 16, seed=0, num_steps=5, process_index=p, process_count=4)
             for p in range(4)]
    for step in range(5):
        shards = [list(map(str, part[step])) for part in parts]
        assert all(len(s) == 4 for s in shards)
        assert sorted(sum(shards, [])) == sorted(map(str, whole[step]))
    with pytest.raises(ValueError, match="does not split"):
        prompt_batches(PROMPTS, 10, seed=0, num_steps=5, process_index=0, process_count=4)
