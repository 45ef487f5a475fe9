"""Every committed head ranking side by side (studies.cross_model): where each head family's top-k sits in depth,
whether the sets agree across seeds and data folders, and whether the contrast-PCS heads are the copying heads.

Rankings are found through :mod:`harness.analysis.results` (the v2 layout ``<model>/<data>/seed<k>/<folder>``) and
compared at ``k`` where given, else at the largest k common to the rankings compared; a ranking without that k is
named in the log and left out, never filled in.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..analysis import results as reader
from ..data.planted import FAMILIES as PLANTED
from ..intervene.heads import HeadSet
from ..runs.files import save_figure
from ..scorers.ranking import Ranking, topk_overlap

log = logging.getLogger("harness")

CONTRAST = ("specific_pcs", "contrast_pcs")  # the profile-contrast families ...
COPY = ("retrieval", "induction")  # ... against the heads that copy from the context


@dataclass(frozen=True)
class Entry:
    """One ranking run: its model and data folder names, its seed, its folder and the ranking."""

    model: str
    data: str
    seed: int
    folder: Path
    ranking: Ranking

    def n_layers(self, family: str) -> int:
        """The model's layers, read off the family's ``[n_layers, n_heads]`` map."""
        return int(self.ranking.maps[family].shape[0])

    def n_heads(self, family: str) -> int:
        """The model's heads in all, read off the family's map."""
        return int(self.ranking.maps[family].numel())

    @property
    def name(self) -> str:
        """``<model>/<data>/seed<k>``, as the log names a ranking."""
        return f"{self.model}/{self.data}/seed{self.seed}"


# ------------------------------------------------------------------------------------------------ finding rankings


def load_entries(results: Path, folder: str = "pcs_ranking") -> list[Entry]:
    """Every v2 ranking below ``results``; none is an error naming what was looked for (and what was ignored)."""
    if not results.is_dir():
        raise SystemExit(f"cross_model: the results folder {results} does not exist")
    found, v1 = reader.ranking_folders(results, folder)
    if v1:
        log.info("not read (v1 layout, no seed level): %s", ", ".join(str(p.relative_to(results)) for p in v1))
    if not found:
        ignored = f"; {len(v1)} v1 folder(s) without a seed level are not read ({v1[0]}, ...)" if v1 else ""
        layout = reader.RANKING_LAYOUT.format(folder=folder)
        raise SystemExit(f"cross_model: no head rankings in {results}: it reads {layout} (run "
                         f"`python -m studies.pcs_ranking` first){ignored}")
    entries = []
    for f in found:
        try:
            ranking = Ranking.load(f)
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"cross_model: cannot read {f / 'ranking.json'}: {type(e).__name__}: {e}") from None
        if not (f / "manifest.json").exists():
            log.warning("%s has no manifest.json (an unfinished ranking run): its ranking.json is read", f)
        entries.append(Entry(f.parents[2].name, f.parents[1].name, int(f.parent.name[4:]), f, ranking))
    return entries


def families_of(entries: Sequence[Entry]) -> list[str]:
    """Every head family the rankings hold, in the order they first appear."""
    return list(dict.fromkeys(f for e in entries for f in e.ranking.families))


def common_k(sets: Sequence[dict], k: int | None = None) -> int | None:
    """``k`` when every one of ``sets`` (k -> top-k maps) has it, else None; without ``k`` the largest k all share."""
    if not sets:
        return None
    shared = set.intersection(*(set(s) for s in sets))
    if k is not None:
        return k if k in shared else None
    return max(shared) if shared else None


# ------------------------------------------------------------------------------------------------ depth


def relative_depths(heads: HeadSet, n_layers: int) -> list[float]:
    """Each head's layer / n_layers (0 = the first layer)."""
    return [h.layer / n_layers for h in heads]


def _depth_text(depths: Sequence[float]) -> str:
    return ", ".join(f"{d:.3f}" for d in depths)


def model_order(entries: Sequence[Entry]) -> list[str]:
    """Models from the shallowest to the deepest (then by name)."""
    depth = {}
    for e in entries:
        depth.setdefault(e.model, e.n_layers(e.ranking.families[0]))
    return sorted(depth, key=lambda m: (depth[m], m))


def depth_rows(entries: Sequence[Entry], k: int | None = None) -> list[dict]:
    """Per model and family: a row per ranking (its top-k, their relative depths, mean and range), then the model's
    row over all its data folders and seeds (``data`` and ``seed`` = "all"; ``heads``: the distinct heads, xN when a
    head recurs). k: ``k``, else the largest k common to the model's rankings of the family."""
    rows = []
    for model in model_order(entries):
        mine = sorted((e for e in entries if e.model == model), key=lambda e: (data_order(e.data), e.seed))
        for fam in families_of(mine):
            having = [e for e in mine if fam in e.ranking.sets]
            kk = common_k([e.ranking.sets[fam] for e in having], k)
            if kk is None:  # the k most of them hold (ties: the larger); the others are named and left out
                held = Counter(x for e in having for x in e.ranking.sets[fam] if k is None or x == k)
                kk = max(held, key=lambda x: (held[x], x)) if held else None
                usable = [e for e in having if kk in e.ranking.sets[fam]]
                log.warning("%s %s: %s; left out: %s", model, fam, f"no top-{k} set in every ranking" if k else
                            f"no k common to every ranking, top-{kk} used", ", ".join(
                                e.name for e in having if e not in usable))
                if not usable:
                    continue
                having = usable
            pooled, counts, layers = [], Counter(), set()
            for e in having:
                heads, n_layers = e.ranking.top(fam, kk), e.n_layers(fam)
                depths = relative_depths(heads, n_layers)
                pooled += depths
                counts.update(heads)
                layers.add(n_layers)
                rows.append({"model": model, "n_layers": n_layers, "data": e.data, "seed": str(e.seed),
                             "family": fam, "k": kk, "heads": str(heads), "depths": _depth_text(depths),
                             "mean": _mean(depths), "min": min(depths, default=float("nan")),
                             "max": max(depths, default=float("nan")), "rankings": 1})
            recurring = sorted(counts, key=lambda h: (-counts[h], h.layer, h.head))
            rows.append({"model": model, "n_layers": "/".join(map(str, sorted(layers))), "data": "all", "seed": "all",
                         "family": fam, "k": kk,
                         "heads": ", ".join(f"{h}x{counts[h]}" if counts[h] > 1 else str(h) for h in recurring),
                         "depths": "", "mean": _mean(pooled), "min": min(pooled, default=float("nan")),
                         "max": max(pooled, default=float("nan")), "rankings": len(having)})
    return rows


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")  # fsum: the same in any order


DEPTH_COLUMNS = [("model", "model"), ("n_layers", "layers"), ("data", "data"), ("seed", "seed"),
                 ("family", "head family"), ("k", "k"), ("heads", "top-k heads"), ("depths", "relative depths"),
                 ("mean", "mean depth"), ("min", "min"), ("max", "max"), ("rankings", "rankings")]


# ------------------------------------------------------------------------------------------------ overlaps


def base_dataset(data: str) -> tuple[str, str | None]:
    """``planted-conventions2012-signoff`` -> (``conventions2012``, ``signoff``); a real dataset -> (it, None)."""
    m = re.fullmatch(rf"planted-(.+)-({'|'.join(PLANTED)})", data)
    return (m.group(1), m.group(2)) if m else (data, None)


def data_order(data: str) -> tuple:
    """A real dataset first, then its planted variants in the planted families' order."""
    base, planted = base_dataset(data)
    return base, planted is not None, PLANTED.index(planted) if planted else -1, data


def relation(a: str, b: str) -> str:
    """How two data folders of one model relate: a real dataset vs its planted variant, two planted variants of one
    dataset, or two datasets."""
    (base_a, pa), (base_b, pb) = base_dataset(a), base_dataset(b)
    if base_a == base_b and (pa is None) != (pb is None):
        return "real vs planted"
    if base_a == base_b and pa and pb:
        return "planted vs planted"
    return "across datasets"


RELATIONS = ("across seeds", "real vs planted", "planted vs planted", "across datasets")


def _pair(comparison: str, a: Entry, b: Entry, fam: str, k: int | None) -> dict | None:
    kk = common_k([a.ranking.sets[fam], b.ranking.sets[fam]], k)
    if kk is None:
        log.warning("%s vs %s, %s: %s; left out", a.name, b.name, fam,
                    f"no top-{k} set in both" if k else "no common k")
        return None
    return {"comparison": comparison, "model": a.model, "family": fam, "k": kk, "data_a": a.data,
            "seed_a": a.seed, "data_b": b.data, "seed_b": b.seed,
            **topk_overlap(a.ranking.top(fam, kk), b.ranking.top(fam, kk), a.n_heads(fam))}


def overlap_rows(entries: Sequence[Entry], k: int | None = None) -> list[dict]:
    """Top-k Jaccard (a) across the seeds of one model, data folder and family, (b) across the data folders of one
    model at the same seed, per family; pairs ordered real vs planted, planted vs planted, other datasets."""
    rows = []
    for model in model_order(entries):
        mine = sorted((e for e in entries if e.model == model), key=lambda e: (data_order(e.data), e.seed))
        fams = families_of(mine)
        pairs = []
        for data in dict.fromkeys(e.data for e in mine):
            seeds = [e for e in mine if e.data == data]
            pairs += [("across seeds", a, b) for a, b in itertools.combinations(seeds, 2)]
        for seed in sorted({e.seed for e in mine}):
            same = [e for e in mine if e.seed == seed]
            pairs += [(relation(a.data, b.data), a, b) for a, b in itertools.combinations(same, 2)]
        pairs.sort(key=lambda p: RELATIONS.index(p[0]))  # stable: data and seed order kept within a relation
        for fam in fams:
            for comparison, a, b in pairs:
                if fam in a.ranking.sets and fam in b.ranking.sets:
                    row = _pair(comparison, a, b, fam, k)
                    if row is not None:
                        rows.append(row)
    return rows


OVERLAP_COLUMNS = [("comparison", "comparison"), ("model", "model"), ("family", "head family"), ("k", "k"),
                   ("data_a", "data"), ("seed_a", "seed"), ("data_b", "vs data"), ("seed_b", "seed"),
                   ("jaccard", "Jaccard"), ("n_shared", "shared"), ("chance_shared", "by chance"),
                   ("p_chance", "p (chance)"), ("shared", "heads shared")]


def contrast_rows(entries: Sequence[Entry], k: int | None = None) -> list[dict]:
    """Per ranking: the specific_pcs and contrast_pcs top-k against the retrieval and induction top-k (Jaccard,
    shared heads); k: ``k``, else the largest k the two families share in that ranking."""
    rows = []
    for model in model_order(entries):
        for e in sorted((e for e in entries if e.model == model), key=lambda e: (data_order(e.data), e.seed)):
            for fam, copy in itertools.product(CONTRAST, COPY):
                if fam not in e.ranking.sets or copy not in e.ranking.sets:
                    continue
                kk = common_k([e.ranking.sets[fam], e.ranking.sets[copy]], k)
                if kk is None:
                    log.warning("%s: %s vs %s has no %s; left out", e.name, fam, copy,
                                f"top-{k} set" if k else "common k")
                    continue
                a, b = e.ranking.top(fam, kk), e.ranking.top(copy, kk)
                rows.append({"model": model, "data": e.data, "seed": e.seed, "family": fam, "vs": copy, "k": kk,
                             **topk_overlap(a, b, e.n_heads(fam)), "heads": str(a), "copy_heads": str(b)})
    return rows


CONTRAST_COLUMNS = [("model", "model"), ("data", "data"), ("seed", "seed"), ("family", "head family"),
                    ("vs", "vs"), ("k", "k"), ("jaccard", "Jaccard"), ("n_shared", "shared"),
                    ("chance_shared", "by chance"), ("p_chance", "p (chance)"), ("shared", "heads shared"),
                    ("heads", "top-k"), ("copy_heads", "copying top-k")]


# ------------------------------------------------------------------------------------------------ the picture


def depth_plot(rows: Sequence[dict], entries: Sequence[Entry], path: Path) -> Path:
    """Relative depth (x, 0..1) of each family's top-k heads, one row per (model, family), a marker and colour per
    data folder, a slight vertical offset per data folder, marker area growing with the heads at one depth (several
    heads of one layer, or several seeds); a black bar at the (model, family) mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [r for r in rows if r["data"] == "all"]
    datas = sorted({e.data for e in entries}, key=data_order)
    markers, colors = "os^Dv<>PX*hp", plt.rcParams["axes.prop_cycle"].by_key()["color"]
    step = min(0.14, 0.7 / max(1, len(datas)))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(summary) + 1.8))
    labels, labelled = [], set()
    for y, s in enumerate(summary):
        mine = [e for e in entries if e.model == s["model"] and s["family"] in e.ranking.sets
                and s["k"] in e.ranking.sets[s["family"]]]
        for j, data in enumerate(datas):
            at = Counter(d for e in mine if e.data == data
                         for d in relative_depths(e.ranking.top(s["family"], s["k"]), e.n_layers(s["family"])))
            if not at:
                continue
            xs = sorted(at)
            ax.scatter(xs, [y + (j - (len(datas) - 1) / 2) * step] * len(xs), s=[22 * at[x] for x in xs],
                       marker=markers[j % len(markers)], color=colors[j % len(colors)], alpha=0.75,
                       edgecolors="none", label=None if data in labelled else data, zorder=2)
            labelled.add(data)
        ax.plot([s["mean"]] * 2, [y - 0.4, y + 0.4], color="black", lw=1.6, zorder=1)
        labels.append(f"{s['model']} ({s['n_layers']} layers) · {s['family']} (top-{s['k']})")
    for y in range(1, len(summary)):
        if summary[y]["model"] != summary[y - 1]["model"]:
            ax.axhline(y - 0.5, color="grey", lw=0.8)
    ax.set_yticks(range(len(summary)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(summary) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("relative depth of a top-k head (layer / n_layers); black bar: mean over data folders and seeds")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Where each head family's top-k sits, across models (marker area: heads at that depth)", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    if handles:
        legend = ax.legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="data",
                           title_fontsize=8)
        for h in getattr(legend, "legend_handles", None) or legend.legendHandles:  # same-size legend markers
            h.set_sizes([22])
    return save_figure(path, fig)


# ------------------------------------------------------------------------------------------------ the study's text


def plan_text(entries: Sequence[Entry], out: Path, k: int | None = None) -> str:
    """What ``--plan`` prints: the folder it would write, the k, and each ranking it would read (shape, families,
    k held)."""
    lines = [f"cross_model runs no model: it reads {len(entries)} ranking(s) and writes "
             f"{out}/ (depth, overlap, contrast_vs_copy: .md/.tex/.csv; depth.png)",
             f"k          {k if k else 'the largest k common to the rankings compared'}"]
    for e in entries:
        fam = e.ranking.families[0]
        ks = sorted(e.ranking.sets[fam])
        lines.append(f"  {e.folder}  {e.n_layers(fam)} x {e.ranking.maps[fam].shape[1]} heads; "
                     f"{', '.join(e.ranking.families)}; k = {', '.join(map(str, ks))}")
    return "\n".join(lines)


def summary_text(entries: Sequence[Entry], depth: list[dict], overlap: list[dict], contrast: list[dict],
                 root: Path) -> str:
    """The lines printed at the end: per model the mean relative depth of each family's top-k, the mean Jaccard of
    each kind of comparison, and how often the contrast-PCS top-k holds copying heads."""
    models = model_order(entries)
    lines = [f"cross_model: {len(entries)} ranking(s) of {len(models)} model(s), "
             f"{len({(e.model, e.data) for e in entries})} model/data folder(s) -> {root}/"]
    for model in models:
        rows = [r for r in depth if r["model"] == model and r["data"] == "all"]
        if rows:
            lines.append(f"  {model} ({rows[0]['n_layers']} layers), mean relative depth of the top-k: " + ", ".join(
                f"{r['family']} {r['mean']:.3f} [{r['min']:.3f}, {r['max']:.3f}]" for r in rows))
    for comparison in RELATIONS:
        rows = [r for r in overlap if r["comparison"] == comparison]
        if rows:
            fams = list(dict.fromkeys(r["family"] for r in rows))
            lines.append(f"  overlap {comparison} (mean Jaccard over {len(rows) // len(fams)} pair(s)): " + ", ".join(
                f"{f} {_mean([r['jaccard'] for r in rows if r['family'] == f]):.2f}" for f in fams))
    if not any(r["comparison"] == "across seeds" for r in overlap):
        lines.append("  overlap across seeds: none (one seed per model and data folder)")
    for fam, copy in itertools.product(CONTRAST, COPY):
        rows = [r for r in contrast if r["family"] == fam and r["vs"] == copy]
        if rows:
            lines.append(f"  {fam} vs {copy}: heads shared in {sum(r['n_shared'] > 0 for r in rows)}/{len(rows)} "
                         f"ranking(s), mean Jaccard {_mean([r['jaccard'] for r in rows]):.2f}, "
                         f"{sum(r['n_shared'] for r in rows)} shared against "
                         f"{sum(r['chance_shared'] for r in rows):.1f} by chance")
    return "\n".join(lines)


def read_record(entries: Sequence[Entry], results: Path) -> dict:
    """What the manifest records of the rankings read: one hash over them all (the run's data) and, per ranking, its
    folder, model, data, seed, config hash and sha256."""
    digests = [reader.sha256(e.folder / reader.RANKING) for e in entries]
    return {"data_sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
            "rankings": [{"folder": str(e.folder.relative_to(results)), "model": e.model, "data": e.data,
                          "seed": e.seed, "config_hash": e.ranking.config_hash, "ranking_sha256": digest}
                         for e, digest in zip(entries, digests)]}
