"""The program every rank runs: ``python -m autocnnp.run_manage.worker RUN_DIR [--resume]``.

It reads ``RUN_DIR/spec.json`` (written by the launcher), assembles the
CNN-Parallelism-Generator with its plugins, runs the actions in binding order, trains, and
evaluates (rank 0). Output:

* stdout: only rank 0's progress lines and its final test line;
* ``RUN_DIR/logs/rank-K.log``: this rank's log (actions, settings, warnings);
* ``RUN_DIR/errors/rank-K.json`` when the rank fails: ``{rank, host, pid, type, message,
  traceback, time}``, read by the launcher to report the first failure;
* ``RUN_DIR/metrics/train_summary.json`` (rank 0): training time and throughput;
* ``RUN_DIR/completed.json`` (rank 0, last): the job finished (what ``status`` believes
  when the launcher died before recording the end);
* ``RUN_DIR/progress/rank-K.json``, ``RUN_DIR/metrics/system.jsonl`` and, on the launcher's
  request, ``RUN_DIR/stacks/rank-K.txt``: written by the rank's heartbeat thread
  (:mod:`autocnnp.run_manage.heartbeat`).

Every rank holds ``RUN_DIR/.ranks.lock`` (shared) while it runs, so that nothing else can
take the run directory over from ranks orphaned by a killed launcher
(:mod:`autocnnp.run_manage.ownership`).

Exit status: 0 on success; a user error (bad data, bad architecture file, diverging ranks...)
prints one line on stderr and exits with its ``exit_code`` (2 for data and config problems,
4 when the loss or weights became NaN/Inf, 5 when the disk is full);
a bug prints its traceback and exits 1; SIGTERM (the launcher stopping the job) exits 143 at
once, even while the rank waits in an allreduce.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from autocnnp.engine import rundir
from autocnnp.engine.vocabulary import rank_host

#: environment variables that hold the rank before the communicator is initialised, by launcher
#: (the last: Slurm's, for torch ranks that plain ``srun`` starts without MPI)
RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "RANK",
                  "SLURM_PROCID")

#: the training loop of each engine (``TrainingSpec.engine``): a module with train(ctx),
#: evaluate(ctx) and close(ctx), called in that order on every rank
TRAINING_MODULES = {"horovod": "autocnnp.components.training",
                    "torch": "autocnnp.components.torch_training"}

#: exit status after SIGTERM (128 + 15, what a shell reports)
SIGTERM_EXIT = 143

#: the running rank's context, so that a failure is recorded under the rank Horovod assigned
_CURRENT: dict[str, Any] = {}


def rank_from_env() -> int:
    """This process's rank as the launcher announced it (0 when started alone)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def quiet_frameworks() -> None:
    """Keep TensorFlow's and Horovod's chatter off stdout/stderr (set before importing TF)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HOROVOD_LOG_LEVEL", "warning")


def setup_logging(run_dir: Path, rank: int) -> logging.Logger:
    """Send every log record (and Python warnings) of this process to ``logs/rank-K.log``."""
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / f"rank-{rank}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return logging.getLogger("autocnnp.worker")


def _tame_tensorflow_logger() -> None:
    # tf's own logger prints INFO lines ("Assets written to ...") to stderr through absl
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(logging.WARNING)
    tf_logger.propagate = True
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)


def install_sigterm_handler(log: logging.Logger) -> None:
    """Exit with status 143 as soon as SIGTERM arrives.

    A Python signal handler runs only when the main thread executes Python code, which it
    does not while it waits inside a Horovod allreduce for a rank that died. So SIGTERM is
    blocked in this thread (and therefore in every thread TensorFlow and Horovod start later)
    and a small thread waits for it with ``sigwait``.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        signal.sigwait({signal.SIGTERM})
        log.warning("SIGTERM received: stopping this rank")
        logging.shutdown()
        os._exit(SIGTERM_EXIT)

    threading.Thread(target=wait, name="autocnnp-sigterm", daemon=True).start()


def load_run_spec(run_dir: Path) -> Any:
    """The :class:`~autocnnp.engine.spec.TrainingSpec` the launcher wrote to ``spec.json``."""
    from autocnnp.engine.spec import spec_from_dict
    from autocnnp.errors import AutocnnpError

    path = run_dir / "spec.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AutocnnpError(f"{path}: no such file; is {run_dir} a run directory?",
                            remedy="start jobs with `autocnnp run CONFIG`") from None
    except ValueError as exc:
        raise AutocnnpError(f"{path}: not valid JSON: {exc}") from None
    return spec_from_dict(data)


def reserve_path(run_dir: Path, rank: int) -> Path:
    """Space set aside at start for this rank's error record (see :func:`write_error`)."""
    return run_dir / "errors" / f".rank-{rank}.reserve"


def write_error(run_dir: Path, rank: int, exc: BaseException) -> Path:
    """Record ``exc`` in ``RUN_DIR/errors/rank-K.json`` (atomically); returns the path.

    On a full disk the rank's reserve file (written at start) is deleted to make room, so
    that the record survives the failure it explains."""
    err_dir = run_dir / "errors"
    err_dir.mkdir(parents=True, exist_ok=True)
    from autocnnp.diskspace import write_with_reserve
    from autocnnp.errors import AutocnnpError

    user_error = isinstance(exc, AutocnnpError)
    record = {"rank": rank, "host": rank_host(), "hostname": socket.gethostname(),
              "pid": os.getpid(),
              "type": type(exc).__name__, "message": exc.message if user_error else str(exc),
              "remedy": exc.remedy if user_error else None, "user_error": user_error,
              "exit_code": exc.exit_code if user_error else 1,
              "traceback": "".join(traceback.format_exception(type(exc), exc,
                                                              exc.__traceback__)),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = err_dir / f"rank-{rank}.json"

    def write() -> None:
        rundir.write_json(path, record)

    write_with_reserve(write, reserve_path(run_dir, rank))
    return path


def run(run_dir: Path, resume: bool, log: logging.Logger) -> tuple[int, Any]:
    """Assemble, run the actions, train and evaluate on this rank. Returns (0, ctx)."""
    import importlib

    from autocnnp.generator.assembly import assemble, run_actions
    from autocnnp.generator.context import RankContext

    from autocnnp.run_manage import heartbeat

    spec = load_run_spec(run_dir)
    training = importlib.import_module(TRAINING_MODULES[spec.engine])
    if heartbeat.reporting_wanted(spec.monitoring):
        _CURRENT["heartbeat"] = heartbeat.start(run_dir, rank_from_env(), spec.monitoring)
    generator = assemble(spec, load_plugins=True)
    ctx = RankContext(spec=spec, run_dir=run_dir, resume=resume, log=log)
    _CURRENT["ctx"] = ctx
    _tame_tensorflow_logger()
    run_actions(generator, ctx)
    result = training.train(ctx)
    if ctx.rank == 0:
        summary = {"initial_epoch": result.initial_epoch, "end_epoch": result.end_epoch,
                   "seconds": round(result.seconds, 3),
                   "images_per_s": round(result.images_per_s, 2),
                   "ranks": ctx.communicator.size}
        rundir.write_json(run_dir / rundir.TRAIN_SUMMARY, summary)
    training.evaluate(ctx)
    if ctx.rank == 0:  # the ground truth of "finished", whatever happens to the launcher
        from autocnnp.run_manage.ownership import write_completion

        write_completion(run_dir, end_epoch=result.end_epoch)
    training.close(ctx)
    log.info("rank finished")
    if "heartbeat" in _CURRENT:
        _CURRENT["heartbeat"].close("done")
    return 0, ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocnnp.run_manage.worker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run directory holding spec.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in RUN_DIR/checkpoints")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    quiet_frameworks()
    rank = rank_from_env()
    log = setup_logging(run_dir, rank)
    install_sigterm_handler(log)
    from autocnnp.components.preemption import install as install_warning_handler
    install_warning_handler()  # before TensorFlow: the signal's default action kills
    from autocnnp.diskspace import DiskFullError, is_disk_full, reserve
    from autocnnp.run_manage.ownership import hold_rank_lock

    problem = hold_rank_lock(run_dir)  # the run counts as live while any rank runs
    if problem:
        log.warning("%s: this rank does not mark the run directory as in use", problem)
    reserve_path(run_dir, rank).parent.mkdir(parents=True, exist_ok=True)
    reserve(reserve_path(run_dir, rank))
    try:
        code, _ = run(run_dir, args.resume, log)
        reserve_path(run_dir, rank).unlink(missing_ok=True)
        logging.shutdown()
        return code
    except BaseException as exc:  # noqa: BLE001 - every failure must be recorded
        if isinstance(exc, SystemExit) and not exc.code:
            return 0
        beat = _CURRENT.get("heartbeat")
        if beat is not None:
            beat.close("failed")
        ctx = _CURRENT.get("ctx")
        if ctx is not None and "communicator" in ctx.values:
            rank = ctx.rank
        from autocnnp.components.preemption import PreemptedError
        from autocnnp.errors import AutocnnpError
        if isinstance(exc, PreemptedError):  # not a failure: no error record, one line
            log.warning("%s", exc)
            if rank == 0:
                print(f"autocnnp: {exc}", flush=True)
            logging.shutdown()
            os._exit(exc.exit_code)
        if is_disk_full(exc) and not isinstance(exc, AutocnnpError):
            where = Path(getattr(exc, "filename", None) or run_dir)
            exc = DiskFullError(where.parent if where != run_dir else run_dir, None,
                                remedy=f"free space there, then continue with: autocnnp run "
                                       f"--resume {run_dir}")
        try:
            write_error(run_dir, rank, exc)
        except OSError as write_exc:
            print(f"rank {rank}: could not write the error record: {write_exc}",
                  file=sys.stderr)
        log.error("failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        if isinstance(exc, AutocnnpError):
            if os.environ.get("AUTOCNNP_FULL_ERROR") == "1":
                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            print(f"rank {rank}: error: {exc}", file=sys.stderr)
            code = exc.exit_code
        elif isinstance(exc, KeyboardInterrupt):
            print(f"rank {rank}: interrupted", file=sys.stderr)
            code = 130
        else:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            code = 1
        sys.stderr.flush()
        sys.stdout.flush()
        logging.shutdown()
        # skip interpreter teardown: Horovod's atexit shutdown can wait forever for ranks
        # that are still inside a collective this rank will never join
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
