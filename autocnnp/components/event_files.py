"""TensorBoard event files written without TensorFlow (the torch engine, the heartbeat).

The records are those ``tf.summary.scalar`` writes (a float32 scalar tensor under the
``scalars`` plugin), framed by the ``tensorboard`` package's own record writer, so
``tensorboard --logdir`` shows them beside the Horovod engine's and reads them the same way.
Only the ``tensorboard`` package is needed: importing it this way does not import TensorFlow
(torch's ``SummaryWriter`` does when TensorFlow is installed, about 10 s per rank here).

:class:`EpochTensorBoard` is the torch engine's twin of ``tf.keras.callbacks.TensorBoard``
with ``update_freq="epoch"``: at every epoch end the logs go to ``train/`` as
``epoch_<name>`` and the ``val_`` ones to ``validation/`` as ``epoch_<name>`` without the
prefix, at step ``epoch`` (counted from 0), the names the Keras callback gives them.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

_FILE_NUMBER = itertools.count(1)


def tensorboard_missing() -> str | None:
    """Why no event file can be written here (the ``tensorboard`` package is missing), or
    None."""
    try:
        import tensorboard.summary.writer.record_writer  # noqa: F401
    except ImportError as exc:
        return f"the tensorboard package is not installed ({exc})"
    return None


class EventFileWriter:
    """One ``events.out.tfevents.*`` file in ``logdir``, opened on the first scalar."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self.path: Path | None = None
        self._records: Any = None

    def _open(self) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.logdir / (f"events.out.tfevents.{int(now):010d}."
                                   f"{socket.gethostname()}.{os.getpid()}."
                                   f"{next(_FILE_NUMBER)}.v2")
        self._records = RecordWriter(open(self.path, "ab"))
        self._records.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2")
                            .SerializeToString())

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        if self._records is None:
            self._open()
        event = event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=scalar_pb(tag, float(value)))
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        if self._records is not None:
            self._records.flush()

    def close(self) -> None:
        if self._records is not None and not self._records.closed:
            self._records.close()


class EpochTensorBoard:
    """The per-epoch scalars of ``tf.keras.callbacks.TensorBoard`` (see the module
    docstring), called by the torch training loop with Keras's method names; rank 0 only."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.train = EventFileWriter(self.log_dir / "train")
        self.validation = EventFileWriter(self.log_dir / "validation")

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            if name.startswith("val_"):
                self.validation.scalar("epoch_" + name[4:], value, epoch)
            else:
                self.train.scalar("epoch_" + name, value, epoch)
        self.train.flush()
        self.validation.flush()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        self.train.close()
        self.validation.close()
