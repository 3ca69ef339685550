"""How every zoo entry point ends: a user mistake is one line `zoo: ...` and exit 2,
a preemption, an interrupt, a full disk or a lost peer rank are one line and their own status."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from zoo_core.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    StoppedBeforeStart,
    UserError,
    disk_error_message,
    find_disk_error,
)


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"zoo: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    # DCP says this on every single-process save/load; it is the intended mode there.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")


def run_guarded(fn: Callable[[], object]) -> int:
    """Run a command; user errors become one line and exit 2, never a traceback."""
    _one_line_warnings()
    try:
        fn()
        return 0
    except UserError as exc:
        if str(exc):  # ranks other than 0 raise the same error without a message
            print(f"zoo: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted before training started; nothing was saved or changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StoppedBeforeStart as exc:
        import signal

        print(
            f"zoo: preempted: stopped by {signal.Signals(exc.signum).name} before training started; "
            f"nothing was saved or changed; run the same command again to start the run as it is",
            file=sys.stderr,
        )
        return exc.exit_code
    except SystemExit:
        raise
    except Exception as exc:
        disk = find_disk_error(exc)
        if disk is not None:
            print(f"zoo: {disk_error_message(disk)}", file=sys.stderr)
            return EXIT_FAILED
        code = getattr(exc, "exit_code", None)
        if code is None and _lost_peer(exc):
            rank = os.environ.get("RANK", "?")
            print(f"zoo: rank {rank} stopped: another rank failed first (its message says why)", file=sys.stderr)
            return EXIT_FAILED
        if code is None:
            raise
        if str(exc):  # a collective stop prints its line once, on rank 0
            print(f"zoo: {exc}", file=sys.stderr)
        return code


def _lost_peer(exc: BaseException) -> bool:
    """Under torchrun: a collective that failed because another rank exited."""
    if "RANK" not in os.environ:
        return False
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "remote worker")
    )
