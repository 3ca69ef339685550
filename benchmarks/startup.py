"""Start-up time of `zoo` commands against `python -c "import torch"`, side by side (issue #25).

    python benchmarks/startup.py [--rounds 9] [--out benchmarks/results/startup-cpu.md]

Each round runs every command once, in a fresh process, in an order that rotates from round to
round (so a burst of load hits each command alike); the table gives each command's median and
fastest wall time and its median as a fraction of `import torch`'s. The registry's catalog is
filled first by one untimed `zoo plugins` (the first `zoo plugins` after an install or an edit
builds the registry, importing torch, and writes it; docs: zoo_core/registry.py). `zoo config`
printing fills in plugin options and builds the model on the meta device, so the first call for
some arguments imports torch (the row with a new `train.seed` each call); the same question again
is answered from its cache (zoo_core/commands/config.py), warmed by one untimed call first.
The CPU, its load average before and after and the Python and torch versions are written with
the table: the machine's load changes the numbers, not which command imports torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

#: (label, argv after the interpreter, expected exit status)
ZOO = [sys.executable, "-m", "zoo_core.cli"]
COMMANDS = [
    ('python -c "import torch"', [sys.executable, "-c", "import torch"], 0),
    ("zoo --help", [*ZOO, "--help"], 0),
    ("zoo --version", [*ZOO, "--version"], 0),
    ("zoo plugins", [*ZOO, "plugins"], 0),
    ("zoo list mixers", [*ZOO, "list", "mixers"], 0),
    ("zoo list specs", [*ZOO, "list", "specs"], 0),
    ("zoo config model.dimm=32 (a config error)", [*ZOO, "config", "model.dimm=32"], 2),
    ("zoo config (asked again: from its cache)", [*ZOO, "config", "model.mixer.name=hawk"], 0),
    ("zoo config (first time for its arguments: imports torch)", [*ZOO, "config", "train.seed={n}"], 0),
]
_calls = iter(range(1, 1 << 30))


def concrete(argv: list[str]) -> list[str]:
    """argv with `{n}` made new for every call (a cache miss each time)."""
    n = next(_calls)
    return [a.replace("{n}", str(n)) for a in argv]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def imports_torch(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the command imports torch, from `python -X importtime` (its import log)."""
    if argv[1] == "-c":
        return True
    r = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env)
    return any(line.split("|")[-1].strip() == "torch" for line in r.stderr.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=None, help="write the markdown table here (default: print it)")
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="zoo-startup-"))
    env = {**os.environ, "ZOO_CACHE": str(cache)}
    try:
        for warm_argv in ([*ZOO, "plugins"], [*ZOO, "config", "model.mixer.name=hawk"]):  # catalog, config cache
            warm = subprocess.run(warm_argv, capture_output=True, env=env)
            assert warm.returncode == 0, warm.stderr
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {label: [] for label, _, _ in COMMANDS}
        for r in range(args.rounds):
            order = COMMANDS[r % len(COMMANDS) :] + COMMANDS[: r % len(COMMANDS)]
            for label, argv, code in order:
                t = time.perf_counter()
                done = subprocess.run(concrete(argv), capture_output=True, env=env)
                times[label].append(time.perf_counter() - t)
                assert done.returncode == code, (label, done.returncode, done.stderr[-500:])
        load_after = os.getloadavg()
        torch_med = statistics.median(times[COMMANDS[0][0]])
        rows = []
        for label, argv, _ in COMMANDS:
            med = statistics.median(times[label])
            torch_col = "yes" if imports_torch(concrete(argv), env) else "no"
            rows.append(f"| {label} | {med:.3f} | {min(times[label]):.3f} | {med / torch_med:.2f} | {torch_col} |")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    lines = [
        "# Start-up: zoo commands against `import torch`",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs ({platform.system()} {platform.machine()}); "
        f"Python {platform.python_version()}, torch {version('torch')}, zoo-core {version('zoo-core')}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}.",
        f"{args.rounds} rounds, each command once per round in a rotating order, each in a fresh process; "
        "the registry catalog and the config cache filled by one untimed `zoo plugins` and `zoo config` first.",
        "Command: `python benchmarks/startup.py --out benchmarks/results/startup-cpu.md`.",
        "",
        "| command | median (s) | fastest (s) | median / import torch | imports torch |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
