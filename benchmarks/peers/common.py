"""What both peer benchmarks share: threads, machine description, load, timing."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"


def add_worker_args(p: argparse.ArgumentParser) -> None:
    """The hidden options a training-step script passes to its own subprocess, one model each."""
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--row", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cpu-linear", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)


def pin_threads(n: int) -> None:
    """torch intra-op threads (and inter-op 1); set before any parallel work."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started
        pass


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _cpuinfo(field: str) -> str:
    """The first `field` line of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    """The model name, with lscpu's family and model numbers (they tell CPU generations apart
    where the name does not: a VM's "AMD EPYC" is Zen 2, 3 or 4)."""
    name = _cpuinfo("model name") or platform.processor() or "unknown cpu"
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    return f"{name} (family {family}, model {model})" if family and model else name


def cpu_capability() -> str:
    """The vector ISA torch's own CPU kernels were dispatched to here (ATen's DEFAULT/AVX2/AVX512)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return "?"


def cpu_flags() -> str:
    """The SIMD/matrix flags that decide CPU kernels (zoo_core.cpu_tune.FLAGS), and the notable absences."""
    from zoo_core.cpu_tune import cpu_info

    have = cpu_info()["flags"]
    missing = [
        name
        for name, flag in (("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile"))
        if flag not in have
    ]
    return " ".join(have) + ("; no " + ", no ".join(missing) if missing else "")


def machine() -> dict[str, str]:
    return {
        "host": platform.node(),
        "cpu": cpu_name(),
        "flags": cpu_flags(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line() -> str:
    """The results files' "Machine:" line: hardware, software, zoo's revision, time."""
    m = machine()
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['host']}; flags {m['flags']}; "
        f"torch CPU capability {cpu_capability()}); {m['os']}; "
        f"Python {m['python']}, "
        f"torch {m['torch']}; zoo at git {git_rev()}; {time.strftime('%Y-%m-%d %H:%M %Z')}."
    )


def command_line() -> str:
    """How this script was run, for the top of its results file (the path relative to the repository)."""
    import shlex
    import sys

    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(RESULTS.parents[1])
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in [str(script), *sys.argv[1:]])


def machine_slug() -> str:
    """A file-name-safe name for this machine: cpu<cores>-<host>."""
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in platform.node())[:40] or "host"
    return f"cpu{os.cpu_count()}-{host}"


def git_rev() -> str:
    """The short commit; ZOO_GIT_REV overrides it where the checkout's .git is not the code's
    (a copy of the working tree sent to another machine)."""
    if os.environ.get("ZOO_GIT_REV"):
        return os.environ["ZOO_GIT_REV"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or "?"
    except Exception:
        return "?"


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_steps(
    step: Callable[[], None], warmup: int, repeats: int, budget_s: float, min_repeats: int = 3
) -> list[float]:
    """Run `warmup` untimed steps, then up to `repeats` timed ones (wall clock,
    perf_counter); stop early once `budget_s` of timed steps have run and at
    least `min_repeats` were taken (for the very slow reference paths)."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
        if spent > budget_s and len(times) >= min_repeats:
            break
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    """min-max around the median, in percent."""
    m = statistics.median(xs)
    return f"{100 * (min(xs) / m - 1):+.0f}/{100 * (max(xs) / m - 1):+.0f}%"


def print_lines(lines: list[str], out=None) -> None:
    """A small report: printed, and written to `out` (a path) when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


def write_report(text: str, out, kind: str) -> None:
    """Write a results file: `out`, else benchmarks/results/peers-<kind>-<machine>.md."""
    path = out or RESULTS / f"peers-{kind}-{machine_slug()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


#: The ops whose time bf16 matrix units (or a faster GEMM) can shrink; the rest is elementwise,
#: reductions, casts and the optimizer.
MATMUL_OPS = ("linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "scaled_dot_product")


def matmul_split(averages) -> tuple[float, float]:
    """(matmul, total) self CPU microseconds of a profiler's key_averages()."""
    total = sum(e.self_cpu_time_total for e in averages)
    return sum(e.self_cpu_time_total for e in averages if any(op in e.key for op in MATMUL_OPS)), total


def profile_split(step: Callable[[], object], steps: int = 2) -> tuple[float, float]:
    """(matmul, other) self CPU ms per step of `steps` calls of `step` under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    matmul, total = matmul_split(prof.key_averages())
    return matmul / 1e3 / steps, (total - matmul) / 1e3 / steps
