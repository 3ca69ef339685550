"""Cross-architecture comparisons at equal compute (Languini's method, for every registered architecture).

A spec crosses tasks x architectures x sizes x budgets (the cells) with an lr
grid and seeds (the runs of a cell). Each run's budget -- device-seconds,
tokens or training FLOPs (from the mixers' declared FLOPs per token) -- becomes
a number of steps; the run trains (resumably) and is evaluated on validation
(and on a test split when the spec names one). A run is identified by a hash of
its resolved config, budget and seed included, and a finished run is reused
only when that hash is equal. Per cell, the best lr is chosen on validation;
tables give the mean and standard deviation over seeds; with several budgets
and sizes a saturating power law is fitted to each architecture's
compute-optimal frontier. See docs/compare.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from zoo_core.errors import UserError, did_you_mean, nearest

SPEC_KEYS = (
    "name",
    "budget",
    "budgets",
    "base",
    "tasks",
    "architectures",
    "sizes",
    "lr",
    "seeds",
    "select",
    "test_split",
    "machine",
    "runs_dir",
    "throughput_repeats",
)
SELECT = {"val_loss": min, "val_bpb": min, "val_accuracy": max}
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
_PREFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12, "P": 1e15}
_BUDGET = re.compile(
    r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMGBTP]?)\s*"
    r"((?i:tokens?|tok|flops?|s|sec|min|m|hr|h))?\s*"
)
#: Bump when what a run computes for the same config changes, so old results are not reused.
IDENTITY_VERSION = 2


class Interrupted(UserError):
    """A signal stopped a run; nothing was recorded as finished."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a run may spend: `amount` device-seconds, tokens or training FLOPs."""

    amount: float
    unit: str  # "seconds" | "tokens" | "flops"

    @property
    def label(self) -> str:
        if self.unit == "seconds":
            return f"{self.amount:g}s"
        word = "tokens" if self.unit == "tokens" else "FLOPs"
        for p, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if self.amount >= f:
                return f"{self.amount / f:g}{p} {word}"
        return f"{self.amount:g} {word}"

    @property
    def slug(self) -> str:
        return self.label.replace(" ", "").replace("FLOPs", "flop")


def parse_budget(value: Any) -> float:
    """'90s', '2m', '1.5h' or a number of seconds -> seconds."""
    b = parse_budget_any(value)
    if b.unit != "seconds":
        raise UserError(f"budget '{value}' is not a duration; write it like 90s, 2m or 1.5h")
    return b.amount


def parse_budget_any(value: Any) -> Budget:
    """'45s', '2m', '1.5h' (device-seconds), '2M tokens', '3e12 FLOPs' (training FLOPs), or a number of seconds."""
    if isinstance(value, (int, float)):
        return Budget(float(value), "seconds")
    m = _BUDGET.fullmatch(str(value))
    unit = (m.group(3) or "").lower() if m else ""
    if not m or (unit in ("", *_UNITS) and m.group(2)):
        raise UserError(
            f"budget '{value}' is not a duration, a token count or a FLOP count; write it like "
            f"90s, 2m or 1.5h, 2M tokens, or 3e12 FLOPs"
        )
    amount = float(m.group(1)) * _PREFIX[m.group(2)]
    if unit.startswith("tok"):
        return Budget(amount, "tokens")
    if unit.startswith("flop"):
        return Budget(amount, "flops")
    return Budget(amount * _UNITS.get(unit or "s", 1), "seconds")


@dataclasses.dataclass
class Spec:
    name: str
    budgets: list[Budget]
    base: list[str]
    architectures: dict[str, list[str]]
    sizes: dict[str, list[str]]
    runs_dir: str
    throughput_repeats: int = 5
    tasks: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {"": []})
    #: lr grid per architecture; [None] runs the config's own optim.lr.
    lrs: dict[str, list[float | None]] = dataclasses.field(default_factory=dict)
    seeds: int = 1
    select: str = "val_loss"
    test_split: str | None = None
    machine: str | None = None
    #: The sizes each task runs at (a task may list `sizes: [...]`); default every size.
    task_sizes: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def budget_s(self) -> float | None:
        """The first device-seconds budget (older specs had exactly one)."""
        return next((b.amount for b in self.budgets if b.unit == "seconds"), None)


def _overrides(block: Any, where: str) -> list[str]:
    """A mapping ({model.dim: 64} or nested) or a list of key=value strings -> overrides."""
    if block is None:
        return []
    if isinstance(block, list):
        return [str(x) for x in block]
    if not isinstance(block, dict):
        raise UserError(f"{where} must be a mapping of config keys to values, or a list of key=value")
    flat: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and not (
            "name" in node and prefix.endswith(("mixer", "block", "loss", "source", "tokenizer"))
        ):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append(f"{prefix}={json.dumps(node) if isinstance(node, (list, dict)) else node}")

    walk("", block)
    return flat


def _lr_grid(value: Any, where: str) -> list[float | None]:
    values = value if isinstance(value, list) else [value]
    try:
        grid = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a learning rate or a list of them, e.g. [1e-3, 3e-3]") from None
    if not grid or any(v <= 0 for v in grid):
        raise UserError(f"{where} must list positive learning rates, e.g. [1e-3, 3e-3]")
    return grid


def specs_dir() -> Any:
    """The folder of the specs zoo ships, `zoo_core/compare/specs/` (package data: an importlib
    resource, so it is there after `pip install`, not only in a checkout; benchmarks/scaling/ and
    benchmarks/recall/ link to its files)."""
    from importlib import resources

    return resources.files("zoo_core.compare").joinpath("specs")


def shipped_specs() -> dict[str, Any]:
    """The shipped specs (`specs_dir()/NAME.yaml`) by NAME: `zoo list specs`, `zoo compare NAME`."""
    files = sorted(specs_dir().iterdir(), key=lambda f: f.name)
    return {f.name[: -len(".yaml")]: f for f in files if f.name.endswith(".yaml")}


def spec_summary(text: str) -> str:
    """A spec's one-line description: its first comment line (`zoo list specs` prints it)."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def _spec_source(path: str) -> tuple[str, str]:
    """(text, stem) of the spec at `path`, or of the shipped spec named `path`."""
    p = Path(path)
    if p.is_file():
        return p.read_text(), p.stem
    shipped = shipped_specs()
    if path in shipped:
        return shipped[path].read_text(), path
    raise UserError(
        f"comparison spec '{path}' does not exist{did_you_mean(path, shipped)} (give a YAML file, or the name "
        f"of a spec zoo ships: {', '.join(shipped) or 'none'}; zoo list specs describes them)"
    )


def load_spec(path: str) -> Spec:
    """The spec at `path` (a YAML file), or the shipped spec of that name (`zoo compare cpu-tiny`)."""
    text, stem = _spec_source(path)
    try:
        data = OmegaConf.to_container(OmegaConf.create(text))
    except Exception as exc:
        raise UserError(f"comparison spec '{path}' is not valid YAML: {str(exc).strip().splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"comparison spec '{path}' must hold a mapping at the top level (see zoo list specs)")
    for key in data:
        if key not in SPEC_KEYS:
            best = nearest(key, SPEC_KEYS)
            raise UserError(
                f"unknown spec key '{key}'{f'; did you mean {best!r}?' if best else ''} (valid: {', '.join(SPEC_KEYS)})"
            )
    if "budget" not in data and "budgets" not in data:
        raise UserError(f"spec '{path}' needs 'budget' (or a list of 'budgets')")
    if "architectures" not in data:
        raise UserError(f"spec '{path}' needs 'architectures'")
    raw = data.get("budgets", data.get("budget"))
    budgets = list(dict.fromkeys(parse_budget_any(b) for b in (raw if isinstance(raw, list) else [raw])))
    default_lr = _lr_grid(data["lr"], "lr") if data.get("lr") is not None else [None]
    archs, lrs = {}, {}
    for k, v in data["architectures"].items():
        v = dict(v) if isinstance(v, dict) else v
        lr = v.pop("lr", None) if isinstance(v, dict) else None
        archs[str(k)] = _overrides(v, f"architectures.{k}")
        lrs[str(k)] = _lr_grid(lr, f"architectures.{k}.lr") if lr is not None else default_lr
    sizes = {str(k): _overrides(v, f"sizes.{k}") for k, v in (data.get("sizes") or {"default": {}}).items()}
    tasks, task_sizes = {}, {}
    for k, v in (data.get("tasks") or {"": {}}).items():
        v = dict(v) if isinstance(v, dict) else v
        only_sizes = v.pop("sizes", None) if isinstance(v, dict) else None
        if only_sizes is not None and (not isinstance(only_sizes, list) or set(only_sizes) - set(sizes)):
            raise UserError(f"tasks.{k}.sizes must list sizes of the spec ({', '.join(sizes)}), got {only_sizes}")
        tasks[str(k)] = _overrides(v, f"tasks.{k}")
        task_sizes[str(k)] = [str(x) for x in only_sizes] if only_sizes is not None else list(sizes)
    select = data.get("select", "val_loss")
    if select not in SELECT:
        raise UserError(f"select: {select} is not one of {', '.join(SELECT)}")
    seeds = int(data.get("seeds", 1))
    if seeds < 1:
        raise UserError(f"seeds: {seeds} must be at least 1")
    name = data.get("name") or stem
    return Spec(
        name,
        budgets,
        _overrides(data.get("base"), "base"),
        archs,
        sizes,
        data.get("runs_dir") or f"runs/compare/{name}",
        int(data.get("throughput_repeats", 5)),
        tasks,
        lrs,
        seeds,
        select,
        data.get("test_split"),
        data.get("machine"),
        task_sizes,
    )


# -- planning: one run per (task, arch, size, budget, lr, seed) ---------------------


@dataclasses.dataclass
class Run:
    task: str
    arch: str
    size: str
    budget: Budget
    lr: float | None
    seed: int
    overrides: list[str]
    identity: str = ""

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return (self.task, self.arch, self.size, self.budget.label)

    @property
    def name(self) -> str:
        parts = [self.task, self.arch, self.size] if self.task else [self.arch, self.size]
        return "-".join(parts + [self.identity[:10]])


def plan(spec: Spec, registry: Any, only: Sequence[str] = ()) -> list[Run]:
    from zoo_core.config import load_config, resolve

    runs = []
    for task, task_ov in spec.tasks.items():
        for arch, arch_ov in spec.architectures.items():
            if only and arch not in only:
                continue
            for size, size_ov in spec.sizes.items():
                if size not in spec.task_sizes.get(task, spec.sizes):
                    continue
                base = spec.base + task_ov + arch_ov + size_ov
                first_seed = int(resolve(load_config(None, base), registry).train.seed)
                for budget in spec.budgets:
                    for lr in spec.lrs.get(arch, [None]):
                        for i in range(spec.seeds):
                            ov = (
                                base + ([f"optim.lr={lr}"] if lr is not None else []) + [f"train.seed={first_seed + i}"]
                            )
                            run = Run(task, arch, size, budget, lr, first_seed + i, ov)
                            run.identity = run_identity(resolve(load_config(None, ov), registry), budget)
                            runs.append(run)
    return runs


def run_identity(cfg: Any, budget: Budget) -> str:
    """Hash of everything that determines a run's result: the resolved config (name, runs_dir,
    steps and display options aside: the steps follow from the budget) and the budget."""
    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    plain = json.loads(json.dumps(plain, default=str))
    for key in ("name", "runs_dir"):
        plain.pop(key, None)
    for key in ("steps", "progress", "tensorboard", "wandb", "log_every", "ckpt_every", "keep_checkpoints"):
        plain.get("train", {}).pop(key, None)
    if plain.get("data", {}).get("documents") == "stream":  # the default: runs from before the key keep their hash
        plain["data"].pop("documents")
    blob = json.dumps({"config": plain, "budget": [budget.amount, budget.unit], "v": IDENTITY_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- running -------------------------------------------------------------------------


def _steps(run: Run, cfg: Any, registry: Any, run_dir: Path, repeats: int) -> tuple[int, dict[str, Any]]:
    """Steps for the run's budget, and the throughput measurement when the budget is in seconds
    (measured once and kept, so a resumed run keeps its step count)."""
    from zoo_core.throughput import measure

    tokens_per_step = cfg.train.global_batch * cfg.data.seq_len
    b = run.budget
    if b.unit == "tokens":
        return max(1, round(b.amount / tokens_per_step)), {}
    if b.unit == "flops":
        return max(1, int(b.amount / (_train_flops_per_token(cfg, registry) * tokens_per_step))), {}
    tp_file = run_dir / "throughput.json"
    if tp_file.exists():
        tp = json.loads(tp_file.read_text())
    else:
        r = measure(cfg, registry, cfg.train.micro_batch or cfg.train.global_batch, warmup=2, repeats=repeats)
        tp = dataclasses.asdict(r)
        run_dir.mkdir(parents=True, exist_ok=True)
        tp_file.write_text(json.dumps(tp, indent=2))
    return max(1, int(tp["tokens_per_s"] * b.amount / tokens_per_step)), tp


def _meta_model(cfg: Any, registry: Any):
    from zoo_core.loop.components import build_tokenizer, model_vocab
    from zoo_core.loop.model import meta_model

    return meta_model(cfg.model, registry, model_vocab(cfg, registry, build_tokenizer(cfg, registry)))


def _train_flops_per_token(cfg: Any, registry: Any) -> float:
    """Training FLOPs per token: 3 x the forward count the mixers, blocks and head declare."""
    return 3.0 * _meta_model(cfg, registry).flops_per_token(cfg.data.seq_len)


def run_one(spec: Spec, run: Run, registry: Any, progress: bool) -> dict[str, Any]:
    """Train one run (or reuse it when its identity matches) and return its row."""
    from zoo_core.config import load_config, resolve
    from zoo_core.loop.train import train

    run_dir = Path(spec.runs_dir) / run.name
    result_file = run_dir / "compare.json"
    done = finished(spec, run)
    if done is not None:
        return done
    extra = [f"name={run.name}", f"runs_dir={spec.runs_dir}"]
    cfg = resolve(load_config(None, run.overrides + extra), registry)
    steps, tp = _steps(run, cfg, registry, run_dir, spec.throughput_repeats)
    out = train(None, run.overrides + extra + [f"train.steps={steps}", f"train.progress={str(progress).lower()}"])
    if out.get("interrupted"):  # a signal stopped training: the run is not finished, and neither is the compare
        raise Interrupted(
            f"{run.name} stopped at step {out['step']} of {steps} (checkpoint saved); "
            f"run the same command again to resume it"
        )
    model = _meta_model(cfg, registry)
    tokens = steps * cfg.train.global_batch * cfg.data.seq_len
    flops_per_token = _train_flops_per_token(cfg, registry)
    val = out.get("val") or {}
    test = _evaluate_split(run_dir, spec.test_split) if spec.test_split else {}
    row = {
        "task": run.task,
        "arch": run.arch,
        "size": run.size,
        "budget": run.budget.label,
        "budget_unit": run.budget.unit,
        "lr": float(cfg.optim.lr),
        "seed": run.seed,
        "params": model.num_params(),
        "params_non_embedding": model.num_params(False),
        "train_flops_per_token": flops_per_token,
        "tokens_per_s": tp.get("tokens_per_s") or _logged_speed(run_dir),
        "steps": steps,
        "tokens": tokens,
        "compute_flops": flops_per_token * tokens,
        "state_bytes": model.state_size(cfg.data.seq_len),
        "val_loss": val.get("loss"),
        "val_bpb": val.get("bpb"),
        "val_accuracy": val.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_accuracy": test.get("accuracy"),
        "device": tp.get("device") or _device(cfg.train.threads),
        "run_dir": str(run_dir),
        "identity": run.identity,
    }
    result_file.write_text(json.dumps(row, indent=2))
    return {**row, "reused": False}


def _evaluate_split(run_dir: Path, split: str) -> dict[str, float]:
    """The finished run's loss and accuracy on another split of its own source (e.g. mqar's test)."""
    from zoo_core.loop.components import build_source
    from zoo_core.loop.distributed import World
    from zoo_core.loop.evaluate import evaluate
    from zoo_core.loop.runs import load_run
    from zoo_core.registry import get_registry

    r = load_run(run_dir, device="cpu")
    t = r.cfg.train
    source = build_source(r.cfg, get_registry(), r.tokenizer, split, t.eval_batch_size, progress=False)
    return evaluate(r.model, source, World(), t.eval_batches, t.carry_state, documents=r.cfg.data.documents)


def _logged_speed(run_dir: Path) -> float | None:
    from zoo_core.loop.metrics import records

    speeds = [r["tokens_per_s"] for r in records(run_dir, "tokens_per_s") if r["tokens_per_s"]]
    return statistics.median(speeds) if speeds else None


def _device(threads: int = 0) -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu x{threads or torch.get_num_threads()} threads"  # the run's train.threads, else torch's default


def finished(spec: Spec, run: Run) -> dict[str, Any] | None:
    """The run's recorded row when it finished with this identity, else None."""
    path = Path(spec.runs_dir) / run.name / "compare.json"
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("identity") == run.identity:
            return {**done, "reused": True}
    return None


def run_spec(
    spec: Spec,
    registry: Any,
    out_dir: Path | None = None,
    only: Sequence[str] = (),
    progress: bool = True,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    runs = plan(spec, registry, only)
    rows = []
    if report_only:  # tables from the finished runs only; train nothing
        rows = [r for r in (finished(spec, run) for run in runs) if r is not None]
        missing = [run.name for run in runs if finished(spec, run) is None]
        if missing:
            print(
                f"zoo compare: {len(missing)} of {len(runs)} runs not finished, left out of the tables: "
                f"{', '.join(missing)}"
            )
        if not rows:
            raise UserError(f"no finished runs of {spec.name} in {spec.runs_dir}; run without --report-only first")
        runs = []
    from zoo_core.loop.metrics import duration, lines_wanted, log_line, progress_bar

    # On a terminal a bar over the runs; off one (a Slurm log) a timestamped line as each run ends.
    lines = progress and lines_wanted()
    started = time.perf_counter()
    for i, run in enumerate(progress_bar(runs, desc=f"compare {spec.name}", unit="run", enabled=progress)):
        what = f"{run.name}: {run.budget.label}, lr {run.lr if run.lr is not None else 'from config'}, seed {run.seed}"
        if lines:
            log_line(f"compare {spec.name}: run {i + 1}/{len(runs)} {what}")
        elif progress:
            tqdm.write(f"-- {what}")
        rows.append(run_one(spec, run, registry, progress))
        if lines:
            row = rows[-1]
            bpb = f"val bpb {row['val_bpb']:.4f}" if row.get("val_bpb") is not None else "no val"
            how = "reused" if row.get("reused") else f"{row['steps']} steps"
            left = (time.perf_counter() - started) / (i + 1) * (len(runs) - i - 1)
            log_line(
                f"compare {spec.name}: finished {i + 1}/{len(runs)} {run.name} ({how}, {bpb}) "
                f"elapsed {duration(time.perf_counter() - started)} eta {duration(left)}"
            )
    reused = [r["run_dir"] for r in rows if r.pop("reused")]
    if reused:
        names = ", ".join(Path(r).name for r in reused)
        print(
            f"zoo compare: reused {len(reused)} of {len(rows)} finished runs with the same config, budget "
            f"and seed: {names}"
        )
    write_results(rows, Path(out_dir or spec.runs_dir), spec)
    return rows


# -- aggregation ---------------------------------------------------------------------

METRICS = ("val_loss", "val_bpb", "val_accuracy", "test_loss", "test_accuracy")


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(
    rows: list[dict[str, Any]], select: str = "val_loss"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(sweep, best): `sweep` has one row per (cell, lr) with the mean and std over seeds of
    each metric; `best` one row per cell, the lr whose mean validation `select` is best.
    The choice never looks at test metrics."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("task", ""), r["arch"], r["size"], r["budget"], r["lr"]), []).append(r)
    sweep = []
    for (task, arch, size, budget, lr), rs in groups.items():
        agg = {"task": task, "arch": arch, "size": size, "budget": budget, "lr": lr, "seeds": len(rs)}
        for key in ("params", "params_non_embedding", "state_bytes", "train_flops_per_token", "budget_unit"):
            agg[key] = rs[0].get(key)
        for key in ("steps", "tokens", "compute_flops", "tokens_per_s"):
            agg[key] = _mean_std([r.get(key) for r in rs])[0]
        for key in METRICS:
            agg[key], agg[f"{key}_std"] = _mean_std([r.get(key) for r in rs])
        agg["device"] = rs[0].get("device")
        sweep.append(agg)
    lower_is_better = SELECT[select] is min
    best: dict[tuple, dict[str, Any]] = {}
    for s in sweep:
        key = (s["task"], s["arch"], s["size"], s["budget"])
        cur = best.get(key)
        if cur is None or (
            s[select] is not None
            and (cur[select] is None or (s[select] < cur[select] if lower_is_better else s[select] > cur[select]))
        ):
            best[key] = s  # ties keep the first (smaller) lr of the grid
    for s in sweep:
        s["best"] = best[(s["task"], s["arch"], s["size"], s["budget"])] is s
    return sweep, list(best.values())


# -- frontier fits ----------------------------------------------------------------------


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The compute-optimal frontier: points (compute, loss) that no point of less or equal
    compute beats on loss, in order of compute."""
    out: list[tuple[float, float]] = []
    for c, l in sorted(points):
        if not out or l < out[-1][1]:
            out.append((c, l))
    return out


def fit_saturating_power_law(compute: Sequence[float], loss: Sequence[float]) -> dict[str, float] | None:
    """Least-squares fit of L(C) = E + A * C^(-alpha) (Chinchilla's form in compute alone):
    E the irreducible loss, alpha the rate. Parameters with standard errors from the
    Jacobian at the optimum (residual variance x (J^T J)^-1); needs 4 points or more."""
    import numpy as np

    C, L = np.asarray(compute, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    n = len(C)
    if n < 4 or np.any(C <= 0):
        return None
    x = np.log(C)
    x0 = x.mean()
    u = x - x0

    def predict(p):  # p = (E, a, alpha), A * C^-alpha = exp(a - alpha * u)
        return p[0] + np.exp(p[1] - p[2] * u)

    def jac(p):
        e = np.exp(p[1] - p[2] * u)
        return np.stack([np.ones_like(u), e, -u * e], axis=1)

    # Start: for each E below the smallest loss, log(L - E) is linear in u; keep the best.
    best = None
    for E in np.linspace(0.0, L.min(), 64, endpoint=False):
        slope, icpt = np.polyfit(u, np.log(L - E), 1)
        p = np.array([E, icpt, -slope])
        sse = float(((predict(p) - L) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, p)
    sse, p = best
    lam = 1e-3
    for _ in range(200):  # Levenberg-Marquardt
        r = L - predict(p)
        J = jac(p)
        JtJ = J.T @ J
        step = np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-12), J.T @ r)
        trial = p + step
        trial_sse = float(((L - predict(trial)) ** 2).sum())
        if trial_sse < sse:
            p, sse, lam = trial, trial_sse, lam / 3
            if np.abs(step).max() < 1e-12:
                break
        else:
            lam *= 10
            if lam > 1e12:
                break
    J = jac(p)
    dof = n - 3
    s2 = sse / dof if dof > 0 else float("nan")
    try:
        cov = s2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        cov = np.full((3, 3), np.nan)
    E, a, alpha = (float(v) for v in p)
    A = math.exp(a + alpha * x0)  # back from centred log-compute
    var_log_a = cov[1, 1] + x0**2 * cov[2, 2] + 2 * x0 * cov[1, 2]
    return {
        "E": E,
        "E_err": float(math.sqrt(max(cov[0, 0], 0))),
        "A": A,
        "A_err": float(A * math.sqrt(max(var_log_a, 0))),
        "alpha": alpha,
        "alpha_err": float(math.sqrt(max(cov[2, 2], 0))),
        "points": n,
        "rmse": math.sqrt(sse / n),
    }


def power_law(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares fit of bpb = a * C^(-b) over compute C, in log-log space (no floor)."""
    pts = [(math.log(r["compute_flops"]), math.log(r["val_bpb"])) for r in rows if r.get("val_bpb")]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return {"a": math.exp(my - slope * mx), "b": -slope, "points": n}


def frontier_fits(best: list[dict[str, Any]], metric: str = "val_bpb") -> dict[tuple[str, str], dict[str, Any]]:
    """Per (task, arch): the compute-optimal frontier over sizes and budgets, and its fit."""
    fits = {}
    for key in dict.fromkeys((b["task"], b["arch"]) for b in best):
        pts = [
            (b["compute_flops"], b[metric])
            for b in best
            if (b["task"], b["arch"]) == key and b.get(metric) is not None and b.get("compute_flops")
        ]
        front = frontier(pts)
        fits[key] = {
            "frontier": front,
            "fit": fit_saturating_power_law(*zip(*front)) if len(front) >= 4 else None,
            "points": len(pts),
        }
    return fits


# -- reporting -----------------------------------------------------------------


def _fmt(v: Any, std: Any = None, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def _lr(v: Any) -> str:
    return "config" if v is None else f"{v:g}"


def _table(columns: list[str], rows: list[list[Any]], tasks: bool) -> list[str]:
    """A Markdown table's lines. The first column is the task: left out when no row has one."""
    if not tasks:
        columns, rows = columns[1:], [r[1:] for r in rows]
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return [line(columns), "|" + "---|" * len(columns), *(line(r) for r in rows)]


def write_results(rows: list[dict[str, Any]], out_dir: Path, spec: Spec) -> None:
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)

    def write_csv(name: str, table: list[dict[str, Any]]) -> None:
        with (out_dir / name).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)

    sweep, best = aggregate(rows, spec.select)
    write_csv("runs.csv", rows)
    write_csv("sweep.csv", sweep)
    write_csv("results.csv", best)
    fits = frontier_fits(best)
    units = sorted({b.unit for b in spec.budgets})
    what = {
        "seconds": "device-seconds (steps from measured tokens/s)",
        "tokens": "training tokens",
        "flops": "training FLOPs (3 x the mixers' declared forward FLOPs per token)",
    }
    tasks = any(r["task"] for r in best)
    lines = [
        f"# {spec.name}",
        "",
        f"Budgets: {', '.join(b.label for b in spec.budgets)}, in {'; '.join(what[u] for u in units)}. "
        f"Each cell's lr is the best of its grid on mean validation {spec.select} (never test); "
        f"± is the standard deviation over {spec.seeds} seed{'s' if spec.seeds > 1 else ''}"
        f"{'' if spec.seeds > 1 else ' (one seed: no spread)'}.",
        "",
        f"Machine: {spec.machine or '-'}; device: {rows[0]['device']}.",
        "",
        *_table(
            ["task", "arch", "size", "budget", "best lr", "seeds", "params", "steps", "tokens", "train FLOPs used"]
            + ["state bytes", "val loss", "val acc", "test acc"],
            [
                [r["task"], r["arch"], r["size"], r["budget"], _lr(r["lr"]), r["seeds"], f"{r['params']:,}"]
                + [f"{r['steps']:.0f}", f"{r['tokens']:,.0f}", f"{r['compute_flops']:.3e}", f"{r['state_bytes']:,}"]
                + [_fmt(r["val_loss"], r["val_loss_std"]), _fmt(r["val_accuracy"], r["val_accuracy_std"], 3)]
                + [_fmt(r["test_accuracy"], r["test_accuracy_std"], 3)]
                for r in best
            ],
            tasks,
        ),
    ]
    if any(len(spec.lrs.get(a, [None])) > 1 for a in spec.architectures):
        lines += ["", f"## lr sweep (validation {spec.select}; * = chosen)", ""]
        lines += _table(
            ["task", "arch", "size", "budget", "lr", "val loss", "val acc"],
            [
                [s["task"], s["arch"], s["size"], s["budget"], _lr(s["lr"]) + (" *" if s["best"] else "")]
                + [_fmt(s["val_loss"], s["val_loss_std"]), _fmt(s["val_accuracy"], s["val_accuracy_std"], 3)]
                for s in sweep
            ],
            tasks,
        )
    fitted = {k: f for k, f in fits.items() if f["fit"]}
    lines += ["", "## Compute-optimal frontier", ""]
    if fitted:
        lines += [
            "Saturating power law fitted to each architecture's frontier (the best size at each compute), "
            "validation bits/byte L(C) = E + A * C^-alpha over training FLOPs C; ± one standard error:",
            "",
        ]
        for (task, arch), f in fitted.items():
            p = f["fit"]
            lines.append(
                f"- {f'{task} ' if task else ''}{arch}: E = {p['E']:.4g} ± {p['E_err']:.2g}, "
                f"A = {p['A']:.4g} ± {p['A_err']:.2g}, alpha = {p['alpha']:.4g} ± {p['alpha_err']:.2g} "
                f"({p['points']} frontier points, rmse {p['rmse']:.3g})"
            )
    else:
        lines.append(
            "No fit: a fit needs 4 or more frontier points (budgets x sizes) per architecture; "
            f"this spec has {len(spec.budgets)} budget(s) x {len(spec.sizes)} size(s)."
        )
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    from zoo_core.compare.plots import plot

    plot(rows, best, fits, out_dir)
