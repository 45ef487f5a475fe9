"""Figures researchers look at: layer x head heatmaps, effect-vs-k curves with CI and null bands, null histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..runs.files import save_figure


def heatmap(scores: np.ndarray, path: Path, *, title: str, label: str, marked: Sequence[tuple[int, int]] = (),
            diverging: bool = True) -> Path:
    """Layer (rows) x head (columns) map of a per-head score; ``marked`` heads get a box."""
    scores = np.asarray(scores, dtype=float)
    n_layers, n_heads = scores.shape
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * n_heads + 2), max(4, 0.22 * n_layers + 1.5)))
    if diverging:
        lim = float(np.nanmax(np.abs(scores))) or 1.0
        im = ax.imshow(scores, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(scores, cmap="viridis", aspect="auto")
    for layer, head in marked:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="black", lw=1.4))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 15)))
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=label, fraction=0.05)
    return save_figure(path, fig)


def effect_curves(ks: Sequence[int], curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, *,
                  null_band: tuple[np.ndarray, np.ndarray] | None = None, title: str, ylabel: str) -> Path:
    """Mean effect vs number of ablated heads, one line per head-set family with its 95% CI band;
    ``null_band`` = (2.5th, 97.5th) percentiles of the random-set null at each k."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if null_band is not None:
        ax.fill_between(ks, null_band[0], null_band[1], color="grey", alpha=0.25, label="random null (95%)")
    for name, (mean, lo, hi) in curves.items():
        line, = ax.plot(ks, mean, marker="o", label=name)
        ax.fill_between(ks, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xscale("log")
    ax.set_xticks(list(ks))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("k (heads ablated)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(path, fig)


def null_histogram(null: np.ndarray, marks: Mapping[str, float], path: Path, *, title: str, xlabel: str) -> Path:
    """Histogram of the random-head-set null with each named set's value as a vertical line."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(null, bins=min(40, max(10, len(null) // 4)), color="grey", alpha=0.7, label=f"random sets (n={len(null)})")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, value) in enumerate(marks.items()):
        ax.axvline(value, color=colors[i % len(colors)], lw=2, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(path, fig)


def bars(values: Mapping[str, tuple[float, float, float]], path: Path, *, title: str, ylabel: str) -> Path:
    """Mean with 95% CI error bars per method."""
    names = list(values)
    mean = np.array([values[n][0] for n in names])
    err = np.array([[values[n][0] - values[n][1], values[n][2] - values[n][0]] for n in names]).T
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), mean, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return save_figure(path, fig)


def damage_cloud(cloud_x: np.ndarray, cloud_y: np.ndarray, named: Mapping[str, tuple[float, float]], path: Path, *,
                 fit: tuple[float, float], title: str, xlabel: str, ylabel: str) -> Path:
    """Random head sets as a cloud of (generic damage, outcome) with the fitted line; named sets marked and labelled."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(cloud_x, cloud_y, s=12, color="grey", alpha=0.6, label=f"random sets (n={len(cloud_x)})")
    xs = np.linspace(min(np.min(cloud_x), *[x for x, _ in named.values()]),
                     max(np.max(cloud_x), *[x for x, _ in named.values()]), 50)
    ax.plot(xs, fit[1] + fit[0] * xs, color="black", lw=1, label="least-squares fit")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (x, y)) in enumerate(named.items()):
        ax.scatter([x], [y], s=50, color=colors[i % len(colors)], edgecolor="black", zorder=3, label=name)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(path, fig)


class SharePoint(NamedTuple):
    """One head set in a :func:`share_panels` panel: its share of the panel's gain and that share's interval, whether it
    is above its null (its null p passes Holm over the figure's head sets), and the mean share of its layer-matched
    random sets (NaN: none)."""

    head_set: str
    share: float
    low: float
    high: float
    above_null: bool
    random_share: float


def share_points(rows: Sequence[Mapping], *, panel: str, outcome_of: Mapping[str, str], alpha: float = 0.05
                 ) -> dict[str, tuple[float, list[SharePoint]]]:
    """What :func:`share_panels` draws: per value of ``rows[panel]`` (a planted family), its gain and, for each named
    head set, ``mean / gain`` with the interval divided by the same gain (the gain's own uncertainty is not in it).
    ``outcome_of[panel value]`` picks the outcome each panel shows; rows carry ``set``, ``outcome``, ``mean``, ``ci``,
    ``gain`` and ``p_null``; ``random:<name>`` rows are the layer-matched random sets of set ``<name>``. A point is
    above its null where its null p, Holm-corrected over every named point the figure draws, is at most ``alpha``
    (never by its percentile). A panel whose gain is not above 0 is left out: a share of nothing, or of a loss, is
    not a share."""
    from .stats import holm

    drawn = [r for r in rows if r["outcome"] == outcome_of[r[panel]] and not str(r["set"]).startswith("random:")
             and r["gain"] > 0]
    adjusted = dict(zip(map(id, drawn), holm([r.get("p_null", float("nan")) for r in drawn])))
    out = {}
    for name in dict.fromkeys(r[panel] for r in rows):
        mine = [r for r in rows if r[panel] == name and r["outcome"] == outcome_of[name]]
        if not mine or not mine[0]["gain"] > 0:
            continue
        gain = mine[0]["gain"]
        random = {str(r["set"]).removeprefix("random:"): r["mean"] / gain
                  for r in mine if str(r["set"]).startswith("random:")}
        out[name] = (gain, [SharePoint(str(r["set"]), r["mean"] / gain, r["ci"][0] / gain, r["ci"][1] / gain,
                                       bool(adjusted[id(r)] <= alpha), random.get(str(r["set"]), float("nan")))
                            for r in mine if not str(r["set"]).startswith("random:")])
    return out


def share_panels(rows: Sequence[Mapping], path: Path, *, panel: str, outcome_of: Mapping[str, str], title: str,
                 ylabel: str) -> Path | None:
    """The known answer at a glance: one panel per planted family (:func:`share_points`), each named head set's share
    of the planted gain with its interval, filled where it is above its null (null p after Holm over the figure) and
    hollow otherwise, a grey diamond beside it for its layer-matched random sets. With no panel, nothing is drawn."""
    panels = share_points(rows, panel=panel, outcome_of=outcome_of)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 0.8, 3.4), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, (gain, points)) in zip(axes[0], panels.items()):
        for x, pt in enumerate(points):
            color = colors[x % len(colors)]
            ax.errorbar([x], [pt.share], yerr=[[max(pt.share - pt.low, 0)], [max(pt.high - pt.share, 0)]], fmt="o",
                        color=color, mfc=color if pt.above_null else "white", ms=7, capsize=3, zorder=3)
            ax.scatter([x + 0.3], [pt.random_share], marker="D", s=18, color="grey", zorder=2)
        ax.axhline(0, color="black", lw=0.6)
        ax.axhline(1, color="black", lw=0.6, ls=":")
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([pt.head_set for pt in points], rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(points) - 0.2)
        ax.set_title(f"{name}\n{outcome_of[name]}, gain {gain:.3f}", fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=9, y=1.0 + 0.04 * (title.count("\n") + 1))
    return save_figure(path, fig)
