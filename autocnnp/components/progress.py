"""Where a rank is in its training, for the launcher's hang watch and ``autocnnp watch``.

:data:`BOARD` is this process's :class:`ProgressBoard`: the training loop's callback
(:func:`make_progress_reporter`) notes every step, validation step and epoch boundary in it (a
few integer and float assignments, no I/O, no TensorFlow op), and the worker's background
thread (:mod:`autocnnp.run_manage.heartbeat`) copies it to ``RUN_DIR/progress/rank-K.json``
about once a second. An engine other than Keras reports through the same three methods.

Plain Python on purpose: importing this module costs nothing and touches no framework.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Phase(str, Enum):
    """What a rank is doing (the ``phase`` of its progress record)."""

    STARTING = "starting"      # imports, data, model: not watched for hangs yet
    TRAINING = "training"      # inside fit: every step must advance within the threshold
    FINISHING = "finishing"    # after fit: saving, evaluating (not watched)
    DONE = "done"
    FAILED = "failed"


@dataclass
class ProgressBoard:
    """The progress of this rank, updated in place by the training loop."""

    phase: Phase = Phase.STARTING
    epoch: int = 0                 # 1-based epoch being trained (0: not started)
    end_epoch: int = 0
    step: int = 0                  # training steps finished in this epoch
    steps_per_epoch: int = 0
    total_steps: int = 0           # training steps finished since the start of fit
    valid_steps: int = 0           # validation steps finished in this epoch
    global_batch: int = 0          # images per step, all ranks together
    progress_at: float = field(default_factory=time.time)  # wall time of the last advance
    step_time_s: float = 0.0       # the last training step (first step of fit excluded)
    step_time_mean_s: float = 0.0  # mean over this epoch's steps (first step excluded)
    max_gap_s: float = 0.0         # the longest wait between two advances after the first epoch
    epochs_done: int = 0           # epochs finished in this fit (the first one traces graphs)
    images_per_s: float = 0.0      # global throughput of the last epoch's steps
    version: int = 0               # bumped at every advance (the heartbeat writes on change)
    _step_started: float = 0.0
    _epoch_steps_time: float = 0.0
    _epoch_steps: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _advance(self, now: float) -> None:
        if self.epochs_done:  # the first epoch traces the graphs: not a measure
            self.max_gap_s = max(self.max_gap_s, now - self.progress_at)
        self.progress_at = now
        self.version += 1

    def start_training(self, end_epoch: int, steps_per_epoch: int, global_batch: int) -> None:
        with self._lock:
            self.phase = Phase.TRAINING
            self.end_epoch, self.steps_per_epoch = int(end_epoch), int(steps_per_epoch)
            self.global_batch = int(global_batch)
            self.progress_at = time.time()
            self.version += 1

    def start_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch, self.step, self.valid_steps = int(epoch), 0, 0
            self._epoch_steps_time, self._epoch_steps = 0.0, 0
            self._advance(time.time())

    def begin_step(self) -> None:
        self._step_started = time.perf_counter()

    def end_step(self) -> None:
        took = time.perf_counter() - self._step_started
        with self._lock:
            self.step += 1
            self.total_steps += 1
            if self.total_steps > 1:
                self.step_time_s = took
                self._epoch_steps_time += took
                self._epoch_steps += 1
                self.step_time_mean_s = self._epoch_steps_time / self._epoch_steps
                if self.global_batch:
                    self.images_per_s = self.global_batch / max(self.step_time_mean_s, 1e-9)
            self._advance(time.time())

    def end_valid_step(self) -> None:
        with self._lock:
            self.valid_steps += 1
            self._advance(time.time())

    def end_epoch_work(self) -> None:
        """An epoch-end callback finished (metrics, checkpoint): that is progress too."""
        with self._lock:
            self._advance(time.time())
            self.epochs_done += 1

    def finish(self, phase: Phase | str = Phase.FINISHING) -> None:
        with self._lock:
            self.phase = Phase(phase)
            self._advance(time.time())

    def snapshot(self) -> dict[str, Any]:
        """The public fields, consistent with each other."""
        with self._lock:
            record = {name: getattr(self, name) for name in self.__dataclass_fields__
                      if not name.startswith("_")}
            record["phase"] = self.phase.value
        return record


#: this process's board
BOARD = ProgressBoard()


def reporting_wanted(monitoring: Any) -> bool:
    """Whether a ``<monitoring>`` setting needs the progress reports: without hang watch
    (``hang_timeout`` 0) and system metrics (``metrics_interval`` 0) no callback, no thread
    and no file cost anything (``autocnnp watch`` then shows only the epoch lines)."""
    return monitoring.hang_timeout_s != 0 or monitoring.metrics_interval_s > 0


def make_progress_reporter(board: ProgressBoard, *, end_epoch: int, steps_per_epoch: int,
                           global_batch: int) -> Any:
    """A Keras callback that notes every step, validation step and epoch end in ``board``.

    It runs last among the epoch-end callbacks, so that a slow checkpoint counts as the
    epoch's work, and reads no logs (``_supports_tf_logs``: Keras converts nothing for it).
    """
    import tensorflow as tf

    class ProgressReporter(tf.keras.callbacks.Callback):
        """Tells the board what the rank is doing; costs two clock reads per step."""

        _supports_tf_logs = True

        def on_train_begin(self, logs: dict | None = None) -> None:
            board.start_training(end_epoch, steps_per_epoch, global_batch)

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            board.start_epoch(epoch + 1)

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            board.begin_step()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            board.end_step()

        def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
            board.end_valid_step()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            board.end_epoch_work()

        def on_train_end(self, logs: dict | None = None) -> None:
            board.finish()

    return ProgressReporter()
