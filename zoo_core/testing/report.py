"""Check results and the report that collects them."""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable


class Skip(Exception):
    """Raised by a check that does not apply; the message says why."""


@dataclasses.dataclass
class CheckResult:
    component: str  # e.g. "mixer attention"
    check: str
    status: str  # pass | fail | skip
    reason: str = ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, AssertionError) and str(exc):
        return str(exc).strip().splitlines()[0]
    # An exception in the component itself: say where it came from.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}{where}"


@dataclasses.dataclass
class Report:
    """The outcome of every check run against one or more components."""

    results: list[CheckResult] = dataclasses.field(default_factory=list)

    def run(self, component: str, check: str, fn: Callable[[], str | None]) -> CheckResult:
        """Run one check; a returned string is a pass note, AssertionError a failure."""
        try:
            result = CheckResult(component, check, "pass", fn() or "")
        except Skip as exc:
            result = CheckResult(component, check, "skip", str(exc))
        except Exception as exc:  # a broken plugin must not stop the other checks
            result = CheckResult(component, check, "fail", _reason(exc))
        self.results.append(result)
        return result

    def run_plan(self, component: str, plan, skip=(), build: Callable[[], object] | None = None) -> Report:
        """Run (name, fn) checks in order. `build` first constructs the component with the
        given options: a UserError there means it needs options the kit cannot guess, so
        every check is skipped with that reason (pass options to check it)."""
        why = None
        if build is not None:
            from zoo_core.errors import UserError

            try:
                build()
            except UserError as exc:
                why = f"needs options to build: {exc}"
            except Exception as exc:
                why = f"could not be built: {_reason(exc)}"
                self.results.append(CheckResult(component, "build", "fail", _reason(exc)))
        for name, fn in plan:
            if why is not None:
                self.results.append(CheckResult(component, name, "skip", why))
            elif name in skip:
                self.results.append(CheckResult(component, name, "skip", "skipped on request"))
            else:
                self.run(component, name, fn)
        return self

    def extend(self, other: Report) -> Report:
        self.results.extend(other.results)
        return self

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        rows = [
            [r.component, r.check, r.status.upper() if r.status == "fail" else r.status, r.reason] for r in self.results
        ]
        header = ["component", "check", "status", "reason"]
        widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(3)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
        lines = [fmt.format(*header).rstrip(), fmt.format(*["-" * w for w in widths], "-" * 6)]
        lines += [fmt.format(*r).rstrip() for r in rows]
        return "\n".join(lines)

    def summary(self) -> str:
        n_pass = sum(r.status == "pass" for r in self.results)
        n_skip = sum(r.status == "skip" for r in self.results)
        return f"{n_pass} passed, {len(self.failures)} failed, {n_skip} skipped"

    def raise_for_failures(self) -> Report:
        """For tests: an AssertionError listing every failed check."""
        if self.failures:
            lines = [f"{r.component}: {r.check}: {r.reason}" for r in self.failures]
            raise AssertionError(f"{len(lines)} conformance check(s) failed:\n" + "\n".join(lines))
        return self

    def __str__(self) -> str:
        return self.table() + "\n" + self.summary()
