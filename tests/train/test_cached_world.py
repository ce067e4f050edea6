"""`train.dmd --prompts FILE` on a text cache: prompts missing from the cache fail up front."""

import numpy as np
import pytest

from train.world import cached_world
from wanjax.text.cache import TextCacheWriter


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "cache"
    with TextCacheWriter(path, d_model=8, max_length=16, dtype="float32") as w:
        for i, prompt in enumerate(["a red fox", "waves on rocks"]):
            w.add(prompt, np.full((3 + i, 8), i, np.float32))
    return path


def test_all_cached_prompts_by_default(cache):
    world = cached_world(str(cache), (16, 1, 4, 4), text_len=16)
    assert world.prompts == ("a red fox", "waves on rocks")
    ctx = world.contexts.encode(["waves on rocks"])
    assert ctx.shape == (1, 16, 8) and np.all(ctx[0, :4] == 1) and np.all(ctx[0, 4:] == 0)


def test_prompt_file_must_be_cached(cache, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("a red fox\n\n")
    assert cached_world(str(cache), (16, 1, 4, 4), 16, str(good)).prompts == ("a red fox",)
    bad = tmp_path / "bad.txt"
    bad.write_text("a red fox\na blue whale\n")
    with pytest.raises(ValueError, match="1 of 2 prompts .* not in the text cache .*blue whale"):
        cached_world(str(cache), (16, 1, 4, 4), 16, str(bad))
    with pytest.raises(FileNotFoundError, match="prompt file"):
        cached_world(str(cache), (16, 1, 4, 4), 16, str(tmp_path / "none.txt"))
