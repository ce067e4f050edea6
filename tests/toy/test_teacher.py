"""Teacher training pieces, the checkpoint round trip and the CLI's argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import toy
from train.toy import teacher
from wanjax.models.dual_expert import DualExpertDiT
from wanjax.sampling.schedules import shift_sigma


def test_unshift_inverts_shift():
    for s in (0.0, 0.3, 0.875, 1.0):
        np.testing.assert_allclose(shift_sigma(teacher.unshift_sigma(s, 3.0), 3.0), s, atol=1e-12)


@pytest.mark.parametrize("expert", ["high", "low"])
def test_each_expert_trains_on_its_own_noise_range(expert):
    sigma = np.asarray(teacher.expert_sigmas(jax.random.key(0), 20000, expert, 0.875, 3.0))
    if expert == "high":
        assert sigma.min() >= 0.875 - 1e-6 and sigma.max() <= 1.0
    else:
        assert sigma.min() >= 0.0 and sigma.max() < 0.875
    # sigma = shift(u) with u uniform on the expert's side: the raw u must look uniform there
    u = sigma / (3.0 - 2.0 * sigma)
    lo, hi = (0.7, 1.0) if expert == "high" else (0.0, 0.7)
    np.testing.assert_allclose(np.quantile(u, [0.25, 0.5, 0.75]),
                               lo + (hi - lo) * np.array([0.25, 0.5, 0.75]), atol=0.01)


def test_flow_matching_loss_matches_numpy():
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 3, 3, 2, 4, 4)).astype(np.float32)
    sigma = np.array([0.2, 0.9, 0.5], np.float32)
    context = rng.standard_normal((3, 4, 8)).astype(np.float32)
    seen = {}

    def model(x, t, c):  # a stand-in DiT: records its inputs, returns a fixed velocity
        seen.update(x=x, t=t)
        return 0.5 * x

    loss = teacher.flow_matching_loss(model, jnp.asarray(x0), jnp.asarray(context),
                                      jnp.asarray(sigma), jnp.asarray(noise))
    s = sigma[:, None, None, None, None]
    x_s = (1 - s) * x0 + s * noise
    np.testing.assert_allclose(seen["x"], x_s, rtol=1e-6)
    np.testing.assert_allclose(seen["t"], 1000 * sigma, rtol=1e-6)
    np.testing.assert_allclose(loss, np.mean((0.5 * x_s - (noise - x0)) ** 2), rtol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = DualExpertDiT(toy.TEACHER, rngs=nnx.Rngs(7))
    for expert in ("high", "low"):  # non-zero heads so outputs differ between the experts
        head = model.expert(expert).head.proj.kernel
        head.set_value(0.1 * jax.random.normal(jax.random.key(len(expert)), head.shape))
    teacher.save_teacher(tmp_path / "t", model, {"script": "test"})
    loaded = teacher.load_teacher(tmp_path / "t")
    assert loaded.cfg == model.cfg
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, toy.FRAMES, toy.HEIGHT, toy.WIDTH)), jnp.float32)
    t = jnp.array([900.0, 300.0])
    ctx = jnp.asarray(rng.standard_normal((2, 4, toy.TEXT_DIM)), jnp.float32)
    for expert in ("high", "low"):
        np.testing.assert_array_equal(loaded.expert(expert)(x, t, ctx), model.expert(expert)(x, t, ctx))
    assert not np.allclose(loaded.high(x, t, ctx), loaded.low(x, t, ctx))


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "-2"], "--batch-size must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--steps", "many"], "invalid int value"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        teacher.main(["--out", str(tmp_path / "t"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").write_text("keep")
    with pytest.raises(SystemExit):
        teacher.main(["--out", str(tmp_path / "t"), "--steps", "1"])
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "t" / "x").read_text() == "keep"


def test_committed_teacher_loads():
    model = teacher.load_teacher(toy.TEACHER_PATH)
    assert model.cfg == toy.TEACHER
