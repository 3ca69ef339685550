"""The plots `zoo compare` writes beside its tables (results.md, CSVs) in the compare output:

- `loss_curves.png`: every run's training loss against training tokens;
- `bpb_vs_compute.png`, `bpb_vs_params.png`: each architecture's validation bits/byte (best lr,
  mean ± std over seeds) against training FLOPs and against parameters;
- `frontier.png` (4 or more frontier points): the compute-optimal frontier and its power-law fit;
- `accuracy_vs_state.png` (recall specs): validation accuracy against the decoding state size.

Every plot has a title, axis labels with units and a legend whose entries stay distinct for any
number of series: series i gets colour i mod 10 and marker (i + i // 10) mod 6, so the first 60
series differ pairwise in (colour, marker), and a line style that changes every 60 series.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: matplotlib's tab10 palette, six filled markers and four line styles.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", "-.", ":")


def style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of series i (0-based): distinct (colour, marker) pairs for the
    first len(COLOURS) x len(MARKERS) = 60 series, then the line style tells them apart."""
    n = len(COLOURS) * len(MARKERS)
    return {
        "color": COLOURS[i % len(COLOURS)],
        "marker": MARKERS[(i + i // len(COLOURS)) % len(MARKERS)],
        "linestyle": LINESTYLES[(i // n) % len(LINESTYLES)],
    }


def _axes(plt: Any, title: str, xlabel: str, ylabel: str, panels: int = 1) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, panels, figsize=(6 + 4 * (panels - 1), 4.5), squeeze=False, sharey=True)
    fig.suptitle(title, fontsize=10)
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    return fig, list(axes[0])


def _legend(fig: Any, ax: Any, n: int) -> None:
    """Beside the axes, in as many columns as it takes (25 per column), so that no entry is hidden."""
    if n:
        ax.legend(fontsize=6, ncol=max(1, math.ceil(n / 25)), loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()


def _label(task: str, arch: str) -> str:
    return f"{task} {arch}" if task else arch


def figures(rows: list[dict[str, Any]], best: list[dict[str, Any]], fits: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """file name -> matplotlib figure, for every plot the rows call for (the caller saves and closes)."""
    import matplotlib

    from zoo_core.loop.metrics import records

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, Any] = {}
    series = list(dict.fromkeys((b["task"], b["arch"]) for b in best))
    for x_key, fname, what, xlabel in (
        ("compute_flops", "bpb_vs_compute.png", "training compute", "training compute (FLOPs)"),
        ("params", "bpb_vs_params.png", "parameters", "parameters (count)"),
    ):
        fig, (ax,) = _axes(
            plt, f"validation bits/byte vs {what} (best lr per cell)", xlabel, "validation loss (bits/byte, mean ± std)"
        )
        drawn = 0
        for i, (t, a) in enumerate(series):
            pts = sorted(
                (b[x_key], b["val_bpb"], b["val_bpb_std"] or 0)
                for b in best
                if (b["task"], b["arch"]) == (t, a) and b["val_bpb"] is not None
            )
            if pts:
                xs, ys, err = zip(*pts)
                ax.errorbar(xs, ys, yerr=err, capsize=2, lw=1, label=_label(t, a), **style(i))
                drawn += 1
        ax.set_xscale("log")
        _legend(fig, ax, drawn)
        out[fname] = fig
    if any(f["fit"] for f in fits.values()):
        fig, (ax,) = _axes(
            plt,
            "compute-optimal frontier (points) and saturating power-law fits (lines)",
            "training compute (FLOPs)",
            "validation loss (bits/byte)",
        )
        for i, ((t, a), f) in enumerate(fits.items()):
            st = style(i)
            cs = [p[0] for p in f["frontier"]]
            ys = [p[1] for p in f["frontier"]]
            ax.plot(cs, ys, ls="none", marker=st["marker"], color=st["color"], label=_label(t, a))
            if f["fit"]:
                p = f["fit"]
                grid = np.geomspace(min(cs), max(cs), 50)
                ax.plot(grid, p["E"] + p["A"] * grid ** -p["alpha"], ls=st["linestyle"], color=st["color"], lw=1)
        ax.set_xscale("log")
        _legend(fig, ax, len(fits))
        out["frontier.png"] = fig
    fig, (ax,) = _axes(plt, "training loss of every run", "training tokens (count)", "training loss (nats/token)")
    drawn = 0
    for r in rows:
        recs = records(r["run_dir"], "loss")
        if not recs:
            continue
        xs, ys = [x["tokens_seen"] for x in recs], [x["loss"] for x in recs]
        ax.plot(xs, ys, lw=1, markevery=max(1, len(xs) // 8), ms=3, label=Path(r["run_dir"]).name, **style(drawn))
        drawn += 1
    _legend(fig, ax, drawn)
    out["loss_curves.png"] = fig
    if any(b.get("val_accuracy") is not None for b in best) and any(b["state_bytes"] for b in best):
        tasks = list(dict.fromkeys(b["task"] for b in best))
        budgets = list(dict.fromkeys(b["budget"] for b in best))
        archs = list(dict.fromkeys(b["arch"] for b in best))  # one style per architecture in every panel
        fig, axes = _axes(
            plt,
            f"recall accuracy vs decoding state (best lr, budget {budgets[-1]})",
            "decoding state (bytes per sequence)",
            "validation accuracy (fraction correct, mean ± std)",
            panels=len(tasks),
        )
        for ax, task in zip(axes, tasks):
            for arch in dict.fromkeys(b["arch"] for b in best if b["task"] == task):
                pts = sorted(
                    (b["state_bytes"], b["val_accuracy"], b["val_accuracy_std"] or 0)
                    for b in best
                    if (b["task"], b["arch"], b["budget"]) == (task, arch, budgets[-1])
                    and b["val_accuracy"] is not None
                )
                if pts:
                    xs, ys, err = zip(*pts)
                    ax.errorbar(xs, ys, yerr=err, capsize=2, lw=1, label=arch, **style(archs.index(arch)))
            ax.set_xscale("log")
            ax.set_title(task or budgets[-1], fontsize=9)
            ax.set_ylim(-0.02, 1.02)
        _legend(fig, axes[-1], len(archs))
        out["accuracy_vs_state.png"] = fig
    return out


def plot(
    rows: list[dict[str, Any]], best: list[dict[str, Any]], fits: dict[tuple[str, str], Any], out_dir: Path
) -> None:
    """Write every figure into out_dir, beside results.md (no plots, with a word, without matplotlib)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        from tqdm import tqdm

        tqdm.write("zoo: matplotlib is not installed, so no plots (pip install 'zoo-core[compare]')")
        return
    for name, fig in figures(rows, best, fits).items():
        fig.savefig(out_dir / name, dpi=120, bbox_inches="tight")
        plt.close(fig)
