"""User-facing errors: one line that names the problem and the fix, exit status 2."""

import difflib
import errno
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """A mistake in the user's input. The CLI prints `zoo: <message>` and exits 2."""

    exit_code = 2


class RegistryError(UserError):
    """Conflicting or broken plugins."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to a mistyped word, or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    best = nearest(word, choices)
    return f"; did you mean '{best}'?" if best else ""


#: Exit statuses of `zoo` (docs/guarantees.md): 0 done, 1 the run failed (diverged,
#: a disk fault, failed checks), 2 bad input (nothing was changed), 75 preempted by a
#: signal with a checkpoint saved (EX_TEMPFAIL: run the same command again to resume),
#: 130 interrupted before training started (nothing saved, nothing to resume).
EXIT_FAILED, EXIT_USAGE, EXIT_PREEMPTED, EXIT_INTERRUPTED = 1, 2, 75, 130
#: Set by `zoo_core.launch.run_torchrun` for its workers: rank 0 writes the preemption there, so the
#: launcher can exit "preempted" while torchrun sees every worker succeed. A contract, so that
#: importing the launcher (a Slurm task unpickling `TrainTask`) imports no torch before its
#: signal handlers are set.
STATUS_ENV = "ZOO_LAUNCH_STATUS"


class Preempted(Exception):
    """A signal stopped training after a checkpoint was saved; the message (rank 0 only) says
    where to resume. The CLI exits with EXIT_PREEMPTED."""

    exit_code = EXIT_PREEMPTED


class StoppedBeforeStart(BaseException):
    """SIGTERM or SIGUSR1 (a scheduler's preemption) before the training loop started: raised
    out of whatever was running (imports, model build, data setup), like KeyboardInterrupt, so
    it reaches the CLI past any `except Exception`. Nothing was saved; the CLI exits
    EXIT_PREEMPTED, and the same command starts the run again as it would have."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stop_before_start(signum: int, frame: object) -> None:
    """A signal handler for a single process before the loop runs (the loop installs its own)."""
    raise StoppedBeforeStart(signum)


#: Under torchrun or in a Slurm task: a preemption signal that came before the loop ran.
early_signal: list[int] = []


def keep_for_the_loop(signum: int, frame: object) -> None:
    """The handler for one of N ranks before the loop runs: every rank must stop after the same
    step, so the signal is kept, and the loop sums it over ranks after its first step and saves
    one checkpoint, as for a signal while training."""
    if not early_signal:
        early_signal.append(signum)


#: Disk faults, and what to do about each.
DISK_FIXES = {
    errno.ENOSPC: "the disk is full: free space there (or point runs_dir= at another disk)",
    errno.EDQUOT: "your disk quota is used up: free space or ask for more quota (or point runs_dir= elsewhere)",
    errno.EROFS: "the file system is read-only: point runs_dir= at a writable directory",
    errno.EACCES: "permission denied: fix the directory's permissions or point runs_dir= at one you own",
    errno.EPERM: "operation not permitted: fix the directory's permissions or point runs_dir= at one you own",
}


def find_disk_error(exc: BaseException) -> OSError | None:
    """The disk fault (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) behind an exception, if any:
    DCP wraps a rank's OSError in a CheckpointException, others chain it."""
    seen = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FIXES:
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "exc", None)]
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):  # DCP: {rank: (exception, stack summary)}
            for f in failures.values():
                todo += [x for x in (f if isinstance(f, tuple) else (f,)) if isinstance(x, BaseException)]
    return None


def disk_error_message(err: OSError) -> str:
    """For an OSError that `find_disk_error` returned (its errno is one of DISK_FIXES)."""
    path = err.filename or "a file"
    code = err.errno if err.errno is not None else -1
    name = errno.errorcode.get(code, str(err.errno))
    fix = DISK_FIXES.get(code, "check the disk and the directory's permissions")
    return (
        f"cannot write {path} ({name}): {fix}; then run the same command again: "
        f"checkpoints and metrics.jsonl are written so that the previous checkpoint stays intact and resumable"
    )


def require(module: str, what: str) -> Any:
    """Import an optional library, or say in one line how to install it."""
    try:
        import importlib

        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{what} needs the '{module}' package; run: pip install 'zoo-core[data]' (or pip install {module})"
        ) from None
