"""Stop cleanly when the cluster warns that the job is about to be killed.

Slurm sends a warning signal (``--signal=USR1@SECONDS``, see
:mod:`autocnnp.engine.plan_slurm`) before a time limit or a preemption. The launcher names
the signal in ``AUTOCNNP_WARNING_SIGNAL``; :func:`install` (called by the worker before it
imports TensorFlow, so an early signal cannot kill the rank) notes its arrival, and the Keras
callback of :func:`make_warning_callback` makes every rank agree on it at the next step
boundary (one small allreduce per step, only on jobs that name a warning signal). Then
training stops on every rank at the same step, rank 0 writes a checkpoint of the weights
reached, and every rank exits with :class:`PreemptedError`'s status, which the batch script
answers with ``scontrol requeue``. The requeued job resumes from that checkpoint and runs the
interrupted epoch again from the weights it had reached, so no finished epoch is lost.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from autocnnp.engine.plan_slurm import PREEMPTED_EXIT
from autocnnp.engine.plan_slurm import WARNING_SIGNAL_ENV as ENV_WARNING_SIGNAL
from autocnnp.errors import AutocnnpError

_received: dict[str, Any] = {"signal": None}


class PreemptedError(AutocnnpError):
    """The job checkpointed on the cluster's warning signal and stops, to be requeued."""

    exit_code = PREEMPTED_EXIT


class WarningSignalStop(Exception):
    """Raised inside ``fit`` on every rank at the agreed step (not an error: the training loop
    turns it into a checkpoint and :class:`PreemptedError`). ``epoch`` is 1-based."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"warning signal at epoch {epoch} step {step}")
        self.epoch = epoch
        self.step = step


def warning_signal() -> signal.Signals | None:
    """The signal named in :data:`ENV_WARNING_SIGNAL`, or None."""
    name = os.environ.get(ENV_WARNING_SIGNAL, "").strip().upper()
    if not name:
        return None
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


def install() -> signal.Signals | None:
    """Note the warning signal instead of dying of it (its default action terminates)."""
    sig = warning_signal()
    if sig is not None:
        signal.signal(sig, lambda signum, frame: _received.update(signal=signum))
    return sig


def received() -> bool:
    """Whether this rank got the warning signal."""
    return _received["signal"] is not None


def make_warning_callback(comm: Any) -> Any:
    """A Keras callback that raises :class:`WarningSignalStop` on every rank at the same step
    boundary once any rank got the warning signal. Raising (rather than ``stop_training``)
    leaves ``fit`` before the epoch-end callbacks, so a partial epoch is never logged or
    checkpointed as a finished one."""
    import horovod.tensorflow as hvd_tf
    import tensorflow as tf

    class WarningSignalWatch(tf.keras.callbacks.Callback):
        """Agrees across ranks on the warning signal and stops training at a step boundary."""

        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            flag = tf.constant(1 if received() else 0, dtype=tf.int32)
            if comm.size > 1:
                flag = hvd_tf.allreduce(flag, op=hvd_tf.Max, name="autocnnp_warning_signal")
            if int(flag):
                raise WarningSignalStop(self.epoch + 1, batch + 1)

    return WarningSignalWatch()
