"""Training checkpoints: orbax, asynchronous, keep-last-k, and safe on preemption.

Each stage keeps its own `CheckpointManager` under `OUT/<stage>/checkpoints/`. SIGTERM (and
SIGINT) only set a flag: the loop finishes the current step, writes a checkpoint and exits, so
a pre-empted job resumes where it stopped. A checkpoint is never written for a state that failed
the non-finite guard.
"""

from __future__ import annotations

import signal
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class StopFlag:
    """Set by SIGTERM/SIGINT; the training loop polls it between steps."""

    def __init__(self):
        self.signal: int | None = None

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None


class Checkpoints:
    """Thin wrapper over `ocp.CheckpointManager` for one pytree (the train state)."""

    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, force: bool = False) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, abstract_state, step: int | None = None):
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
