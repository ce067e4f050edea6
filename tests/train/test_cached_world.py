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


def test_real_latents_for_the_gan_term(cache, tmp_path):
    """`--real-latents DIR` (the save_latents layout) feeds the GAN term's real samples: batches
    are epochs of a permutation with their captions, and a bad folder fails up front."""
    from train.world import save_latents

    latents = np.arange(5 * 16 * 4 * 4, dtype=np.float32).reshape(5, 16, 1, 4, 4)
    captions = ["a red fox", "waves on rocks", "a red fox", "waves on rocks", "a red fox"]
    save_latents(latents, captions, tmp_path / "real")
    world = cached_world(str(cache), (16, 1, 4, 4), 16, real_latents=str(tmp_path / "real"))
    seen = []
    for index in range(2):  # 2 batches of 3 over 5 latents: one epoch, then the next begins
        x, prompts = world.real_samples(index, 3, 0)
        assert x.dtype == np.float32 and x.shape == (3, 16, 1, 4, 4)
        for xi, p in zip(x, prompts, strict=True):
            i = int(xi.ravel()[0]) // (16 * 4 * 4)  # which latent this is
            np.testing.assert_array_equal(xi, latents[i])
            assert p == captions[i]
            seen.append(i)
    assert sorted(seen[:5]) == [0, 1, 2, 3, 4]  # the first epoch holds every latent once
    x_again, _ = world.real_samples(1, 3, 0)
    np.testing.assert_array_equal(x_again, x)  # a pure function of (index, size, seed)
    assert cached_world(str(cache), (16, 1, 4, 4), 16).real_samples is None

    save_latents(latents[:, :, :, :2], captions, tmp_path / "small")
    with pytest.raises(ValueError, match=r"shape \(5, 16, 1, 2, 4\)"):
        cached_world(str(cache), (16, 1, 4, 4), 16, real_latents=str(tmp_path / "small"))
    save_latents(latents, [*captions[:4], "a blue whale"], tmp_path / "uncached")
    with pytest.raises(ValueError, match="1 captions .* not in the text cache .*blue whale"):
        cached_world(str(cache), (16, 1, 4, 4), 16, real_latents=str(tmp_path / "uncached"))
    save_latents(latents, captions[:4], tmp_path / "short")
    with pytest.raises(ValueError, match="5 latents but 4 captions"):
        cached_world(str(cache), (16, 1, 4, 4), 16, real_latents=str(tmp_path / "short"))
    with pytest.raises(FileNotFoundError, match="latents.npy and prompts.txt"):
        cached_world(str(cache), (16, 1, 4, 4), 16, real_latents=str(tmp_path / "none"))


def test_gan_on_data_without_real_latents_fails_before_loading(cache, tmp_path, capsys):
    from train import dmd

    argv = ["--preset", "a14b", "--teacher", str(tmp_path / "no_teacher"), "--text-cache",
            str(cache), "--latent-shape", "16,1,4,4", "--out", str(tmp_path / "o"),
            "--gan-weight", "1", "--gan-real", "data"]
    assert dmd.main(argv) == 1
    err = capsys.readouterr().err
    assert "--real-latents" in err and "\n" not in err.strip()
