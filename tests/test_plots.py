"""Plots a reviewer reads (issue #25): every plot `zoo compare` writes has a title, axis labels
with units and a legend whose entries differ pairwise in (colour, marker) for any number of
series; they are written beside results.md in the compare output."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from matplotlib.colors import to_hex  # noqa: E402

from zoo_core.compare.plots import COLOURS, MARKERS, figures, plot, style  # noqa: E402

N = 25


def _rows(tmp_path, n=N):
    """n architectures (one task, one size, two budgets), as write_results hands them over."""
    rows, best = [], []
    for i in range(n):
        run_dir = tmp_path / f"arch{i:02d}"
        run_dir.mkdir()
        recs = [{"step": s, "loss": 5.0 - 0.1 * s - 0.01 * i, "tokens_seen": 64 * s} for s in range(1, 6)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        rows.append({"run_dir": str(run_dir)})
        for budget, flops in (("30s", 1e12), ("60s", 2e12)):
            best.append(
                {
                    "task": "",
                    "arch": f"arch{i:02d}",
                    "budget": budget,
                    "compute_flops": flops * (1 + i / 100),
                    "params": 1e5 * (1 + i),
                    "val_bpb": 2.0 - i / 100 - flops / 1e13,
                    "val_bpb_std": 0.01,
                    "val_accuracy": 0.5 + i / 100,
                    "val_accuracy_std": 0.02,
                    "state_bytes": 1024 * (1 + i),
                }
            )
    fits = {
        ("", f"arch{i:02d}"): {
            "frontier": [(1e12, 2.0 - i / 100), (2e12, 1.9 - i / 100)],
            "fit": {"E": 1.0, "A": 10.0, "alpha": 0.1},
        }
        for i in range(n)
    }
    return rows, best, fits


def _handle_style(handle):
    """(colour, marker) of a legend entry: a line, or the data line of an errorbar."""
    line = handle.lines[0] if isinstance(getattr(handle, "lines", None), tuple) else handle  # errorbar: data line
    return to_hex(line.get_color()), line.get_marker()


def test_styles_differ_in_colour_and_marker_for_sixty_series_then_in_line_style():
    pairs = [(style(i)["color"], style(i)["marker"]) for i in range(len(COLOURS) * len(MARKERS))]
    assert len(set(pairs)) == len(pairs) == 60
    assert style(0)["linestyle"] != style(60)["linestyle"]
    assert (style(1)["color"], style(1)["marker"]) != (style(0)["color"], style(0)["marker"])


def test_every_plot_has_a_title_labels_with_units_and_a_distinct_legend_for_25_series(tmp_path):
    import matplotlib.pyplot as plt

    rows, best, fits = _rows(tmp_path)
    figs = figures(rows, best, fits)
    expected = {"bpb_vs_compute.png", "bpb_vs_params.png", "frontier.png", "loss_curves.png", "accuracy_vs_state.png"}
    assert set(figs) == expected
    for name, fig in figs.items():
        assert fig._suptitle is not None and fig._suptitle.get_text(), name
        axes = fig.axes
        assert all(ax.get_xlabel() for ax in axes), name
        assert axes[0].get_ylabel(), name
        for label in [axes[0].get_ylabel(), *(ax.get_xlabel() for ax in axes)]:
            assert "(" in label and ")" in label, f"{name}: '{label}' names no unit"
        legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None]
        assert len(legends) == 1, name
        labels = [t.get_text() for t in legends[0].get_texts()]
        handles, drawn = legends[0].axes.get_legend_handles_labels()  # the artists the entries stand for
        assert labels == drawn and len(labels) == N, name
        styles = [_handle_style(h) for h in handles]
        assert len(set(styles)) == N, f"{name}: legend entries repeat a (colour, marker) pair"
        assert len(set(labels)) == N
    plt.close("all")


def test_plots_are_written_beside_the_results(tmp_path):
    import matplotlib.pyplot as plt

    rows, best, fits = _rows(tmp_path, n=3)
    out = tmp_path / "out"
    out.mkdir()
    plot(rows, best, fits, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["accuracy_vs_state.png", "bpb_vs_compute.png", "bpb_vs_params.png", "frontier.png", "loss_curves.png"]
    )
    assert all(p.stat().st_size > 0 for p in out.iterdir())
    assert not plt.get_fignums()  # every figure closed
