"""The deterministic prompt stream."""

import itertools

import pytest

from train.toy import world
from train.toy.data import PromptStream, eval_prompts


def test_each_epoch_is_a_permutation_and_seeds_differ():
    stream = PromptStream(seed=3)
    for epoch in range(3):
        block = [stream[64 * epoch + i] for i in range(64)]
        assert sorted(block) == sorted(world.all_prompts())
    assert [stream[i] for i in range(64)] != [stream[64 + i] for i in range(64)]
    assert [stream[i] for i in range(64)] != [PromptStream(seed=4)[i] for i in range(64)]


def test_batches_resume_at_any_step():
    stream = PromptStream(seed=0)
    run = list(itertools.islice(stream.batches(24), 10))
    resumed = list(itertools.islice(PromptStream(seed=0).batches(24, start_step=7), 3))
    assert resumed == run[7:10]
    assert run[3] == stream.batch(3, 24)


def test_errors_and_eval_set():
    with pytest.raises(IndexError):
        PromptStream()[-1]
    with pytest.raises(ValueError):
        PromptStream(prompts=[])
    ps = eval_prompts(3)
    assert len(ps) == 192 and all(ps.count(p) == 3 for p in world.all_prompts())
