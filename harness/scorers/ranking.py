"""Head scorers by name, and the one ``Ranking`` every later study reads its head sets from.

    @register_head_scorer("retrieval", label="retrieval score (Wu et al.)", needs_eager=True, uses_discovery=False)
    def retrieval(ctx: ScoringContext) -> HeadScores: ...

A scorer turns a study's setup into a ``[n_layers, n_heads]`` map (and, when it is a mean over discovery examples, the
per-example maps behind it, for CIs and top-k stability). ``rank_heads`` runs the families a config names and returns
a ``Ranking`` holding every map and every top-k set; the ablation and DPS studies load it and never recompute top-k.
Adding a head family is one registered function plus its name in ``families``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..intervene.heads import HeadSet, top_heads
from ..intervene.pcs import head_attributions, head_effects
from ..runs.files import write_json
from ..analysis.stats import bootstrap_weights


@dataclass(frozen=True)
class HeadScores:
    """One family's scores: the map, the per-example maps it averages (if any), and what to record about it."""

    map: torch.Tensor  # [n_layers, n_heads]
    per_example: torch.Tensor | None = None  # [n_examples, n_layers, n_heads], examples = the discovery split
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HeadScorer:
    name: str
    fn: Callable[["ScoringContext"], HeadScores]
    label: str  # axis/legend text
    needs_eager: bool  # reads attention weights (needs an eager-attention copy of the model)
    uses_discovery: bool  # scored on the discovery examples (else on constructed inputs)


HEAD_SCORERS: dict[str, HeadScorer] = {}


def register_head_scorer(name: str, *, label: str, needs_eager: bool = False,
                         uses_discovery: bool = True) -> Callable:
    """Register ``fn(ctx) -> HeadScores`` as head family ``name`` (usable in ``--families``)."""
    def deco(fn: Callable[["ScoringContext"], HeadScores]) -> Callable:
        HEAD_SCORERS[name] = HeadScorer(name, fn, label, needs_eager, uses_discovery)
        return fn
    return deco


def head_scorer(name: str) -> HeadScorer:
    """The registered scorer ``name``; an unknown name is an error that suggests the closest ones."""
    if name not in HEAD_SCORERS:
        close = difflib.get_close_matches(name, HEAD_SCORERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no head scorer {name!r}{hint} (registered: {', '.join(sorted(HEAD_SCORERS))})")
    return HEAD_SCORERS[name]


class ScoringContext:
    """What scorers read: the study's setup, run folder and config; shared work is computed once and checkpointed."""

    def __init__(self, setup: Any, run: Any, cfg: Any) -> None:
        self.setup, self.run, self.cfg = setup, run, cfg

    @cached_property
    def effects(self) -> "ConditionEffects":
        """Every head's loss increase per discovery example in each measured condition (checkpointed)."""
        return discovery_effects(self.setup, self.run, self.cfg)

    @cached_property
    def eager(self) -> Any:
        from ..models.registry import load_model

        return load_model(self.cfg.model, attn_implementation="eager")


@dataclass(frozen=True)
class ConditionEffects:
    """Per discovery example and condition (own / other / none): every head's loss increase and the clean loss."""

    example_ids: list[str]
    user_ids: list[str]
    effects: dict[str, torch.Tensor]  # condition -> [n_examples, n_layers, n_heads]
    clean: dict[str, torch.Tensor]  # condition -> [n_examples]

    def of(self, condition: str) -> torch.Tensor:
        if condition not in self.effects:
            raise KeyError(f"head effects were measured in conditions {', '.join(self.effects)}, not {condition!r}: "
                           "add it to --conditions")
        return self.effects[condition]


def discovery_effects(setup: Any, run: Any, cfg: Any) -> ConditionEffects:
    """Per discovery example, every head's loss increase in each of ``cfg.conditions`` (PCS ``cfg.estimator``)."""
    ck = run.checkpoint("effects")
    score = head_effects if cfg.estimator == "exact" else head_attributions
    discovery = setup.split.discovery
    for ex in tqdm([e for e in discovery if e.example_id not in ck], desc=f"PCS ({cfg.estimator})",
                   initial=len(ck), total=len(discovery)):
        effects, clean = {}, {}
        for cond in cfg.conditions:
            clean[cond], deltas = setup.call(score, setup.model, setup.tokenized(ex.example_id, cond),
                                             ablation=setup.ablation, backend=setup.backend,
                                             what=f"PCS {cfg.estimator} on {ex.example_id} ({cond})")
            effects[cond] = deltas.reshape(setup.shape.n_layers, setup.shape.n_heads)
        ck.add(ex.example_id, user_id=ex.user_id, effects=effects, clean=clean)
    recs = [ck.get(e.example_id) for e in discovery]
    return ConditionEffects([r["key"] for r in recs], [r["user_id"] for r in recs],
                            {c: torch.tensor([r["effects"][c] for r in recs]) for c in cfg.conditions},
                            {c: torch.tensor([r["clean"][c] for r in recs]) for c in cfg.conditions})


def _effect_scores(effects: torch.Tensor) -> HeadScores:
    return HeadScores(effects.mean(0), effects)


@register_head_scorer("pcs", label="PCS (Δ NLL, own profile)")
def _pcs(ctx: ScoringContext) -> HeadScores:
    return _effect_scores(ctx.effects.of("own"))


@register_head_scorer("specific_pcs", label="user-specific contrast PCS (Δ NLL own − other user)")
def _specific_pcs(ctx: ScoringContext) -> HeadScores:
    return _effect_scores(ctx.effects.of("own") - ctx.effects.of("other"))


@register_head_scorer("contrast_pcs", label="profile-contrast PCS (Δ NLL own − no profile)")
def _contrast_pcs(ctx: ScoringContext) -> HeadScores:
    return _effect_scores(ctx.effects.of("own") - ctx.effects.of("none"))


def needle_corpus(data: str) -> str:
    """The corpus the retrieval-head needles and haystacks come from: never the study's own text (a planted corpus
    counts as its base dataset)."""
    from ..data.planted import PREFIX

    base = data[len(PREFIX):].split(":")[0] if data.startswith(PREFIX) else data
    return "debates2016" if base == "conventions2012" else "conventions2012"


@register_head_scorer("retrieval", label="retrieval score (Wu et al.)", needs_eager=True, uses_discovery=False)
def _retrieval(ctx: ScoringContext) -> HeadScores:
    from .retrieval import RETRIEVAL_TOKENS, needle_prompts, retrieval_scores

    cfg = ctx.cfg
    other = needle_corpus(cfg.data)

    def compute() -> dict:
        prompts = needle_prompts(ctx.eager.tokenizer, cfg.retrieval_prompts, seed=cfg.seed, corpus=other)
        res = retrieval_scores(ctx.eager, prompts, max_new_tokens=RETRIEVAL_TOKENS)
        return {"map": res.scores.tolist(), "info": {
            "retrieval_prompts": len(prompts), "retrieval_recovered": int(res.recovered.sum()),
            "retrieval_recall": res.recall, "retrieval_heads_at_0.1": str(res.heads(0.1))}}
    saved = ctx.run.artifact("retrieval_scores", cfg.subset("model", "data", "seed", "retrieval_prompts"), compute)
    return HeadScores(torch.tensor(saved["map"]), info=saved["info"])


@register_head_scorer("induction", label="induction score", needs_eager=True, uses_discovery=False)
def _induction(ctx: ScoringContext) -> HeadScores:
    from .induction import INDUCTION_LEN, induction_scores

    cfg = ctx.cfg

    def compute() -> dict:
        res = induction_scores(ctx.eager, n_sequences=cfg.induction_sequences, seq_len=INDUCTION_LEN, seed=cfg.seed)
        return {"map": res.scores.tolist(), "info": {"induction_sequences": cfg.induction_sequences}}
    saved = ctx.run.artifact("induction_scores", cfg.subset("model", "seed", "induction_sequences"), compute)
    return HeadScores(torch.tensor(saved["map"]), info=saved["info"])


@dataclass
class Ranking:
    """Every family's score map and top-k sets, from one ranking run (the head sets later studies use)."""

    maps: dict[str, torch.Tensor]  # family -> [n_layers, n_heads]
    sets: dict[str, dict[int, HeadSet]]  # family -> k -> top-k heads
    discovery_ids: list[str]
    config: dict  # the ranking run's numbers config
    info: dict = field(default_factory=dict)  # family -> what the scorer recorded

    @classmethod
    def from_maps(cls, maps: dict[str, torch.Tensor], k_heads: list[int], discovery_ids: list[str], config: dict,
                  info: dict | None = None) -> "Ranking":
        sets = {fam: {k: top_heads(m, k) for k in sorted(k_heads)} for fam, m in maps.items()}
        return cls(maps, sets, list(discovery_ids), config, info or {})

    @property
    def families(self) -> list[str]:
        return list(self.maps)

    @property
    def config_hash(self) -> str:
        from ..runs.provenance import config_hash

        return config_hash(self.config) if self.config else "v1 ranking (no config recorded)"

    def require_same_draw(self, numbers: dict) -> None:
        """Refuse a study whose model, data or split settings differ from the ranking's (its head sets would then
        come from another draw), naming each differing field."""
        from ..errors import ConfigError
        from ..runs.provenance import config_diff

        if not self.config:
            return
        keys = ("model", "data", "split", "n", "seed", "eval_fraction", "by_user")
        changed = config_diff({k: self.config.get(k) for k in keys}, {k: numbers.get(k) for k in keys})
        if changed:
            raise ConfigError(f"the ranking was made with other data settings ({'; '.join(changed)}); rank with the "
                              "same settings first or pass --ranking-run")

    def top(self, family: str, k: int) -> HeadSet:
        """The top-``k`` set of ``family`` as ranked (an unranked family or k is an error naming what exists)."""
        if family not in self.sets:
            raise KeyError(f"the ranking has no family {family!r} (has {', '.join(self.sets)})")
        if k not in self.sets[family]:
            raise KeyError(f"the ranking has no top-{k} sets (has k = {sorted(self.sets[family])}); "
                           "rerun the ranking with that k in --k-heads")
        return self.sets[family][k]

    def save(self, path: Path) -> Path:
        return write_json(path, {"maps": {f: m.tolist() for f, m in self.maps.items()},
                                 "sets": {f: {str(k): str(hs) for k, hs in s.items()} for f, s in self.sets.items()},
                                 "discovery_ids": self.discovery_ids, "config": self.config, "info": self.info})

    @classmethod
    def load(cls, folder: str | Path) -> "Ranking":
        """Read ``ranking.json`` from a ranking run folder (or, for runs made before it existed, the v1 files
        ``top_heads.json`` + ``head_scores.csv``)."""
        folder = Path(folder)
        if (folder / "ranking.json").exists():
            raw = json.loads((folder / "ranking.json").read_text())
            return cls({f: torch.tensor(m) for f, m in raw["maps"].items()},
                       {f: {int(k): HeadSet.parse(v) for k, v in s.items()} for f, s in raw["sets"].items()},
                       raw["discovery_ids"], raw["config"], raw.get("info", {}))
        if not (folder / "top_heads.json").exists():
            raise FileNotFoundError(f"no head ranking in {folder}: run `python -m studies.pcs_ranking` with the same "
                                    "--model/--data/--n/--seed first (or pass --ranking-run)")
        top = json.loads((folder / "top_heads.json").read_text())
        table = pd.read_csv(folder / "head_scores.csv").sort_values(["layer", "head"])
        shape = (int(table["layer"].max()) + 1, int(table["head"].max()) + 1)
        columns = {"pcs": "pcs", "contrast_pcs": "contrast_pcs", "retrieval": "retrieval_score",
                   "induction": "induction_score"}
        maps = {f: torch.tensor(table[c].to_numpy()).reshape(shape) for f, c in columns.items()}
        sets = {f: {int(k): HeadSet.parse(s[f]) for k, s in top["sets"].items()} for f in columns}
        return cls(maps, sets, top["discovery_ids"], {})


def load_ranking(cfg: Any) -> tuple[Ranking, Path]:
    """The ranking a later study uses: ``cfg.ranking_run``, or the sibling ranking folder of the same model, data and
    ablation design; refused when it was drawn with other data settings."""
    from ..runs.files import slug

    folder = Path(cfg.ranking_run or Path(cfg.results) / slug(cfg.model) / slug(cfg.data) / cfg.folder("pcs_ranking"))
    ranking = Ranking.load(folder)
    ranking.require_same_draw(cfg.numbers_config())
    return ranking, folder


def rank_heads(ctx: ScoringContext, families: list[str], k_heads: list[int]) -> tuple[Ranking, dict[str, HeadScores]]:
    """Run every named head scorer and build the ranking (and return the scores, per-example maps included)."""
    scores = {fam: head_scorer(fam).fn(ctx) for fam in families}
    ids = ctx.effects.example_ids if any(head_scorer(f).uses_discovery for f in families) else \
        [e.example_id for e in ctx.setup.split.discovery]
    ranking = Ranking.from_maps({f: s.map for f, s in scores.items()}, k_heads, ids, ctx.run.config,
                                {f: s.info for f, s in scores.items()})
    return ranking, scores


def jaccard(a: HeadSet, b: HeadSet) -> float:
    """|a ∩ b| / |a ∪ b| (nan for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else float("nan")


def topk_stability(per_example: torch.Tensor, k: int, users: list[str], *, n_boot: int,
                   seed: int) -> tuple[float, np.ndarray]:
    """Mean Jaccard between the top-k of the mean map and the top-k of each user-clustered bootstrap resample,
    and each head's selection frequency ``[n_layers, n_heads]`` (resamples drawn as ``stats.bootstrap_means``)."""
    full = top_heads(per_example.mean(0), k)
    weights = torch.tensor(bootstrap_weights(users, n_boot=n_boot, seed=seed), dtype=per_example.dtype)
    boot_means = torch.einsum("bn,nlh->blh", weights, per_example) / weights.sum(1)[:, None, None]
    freq = np.zeros(per_example.shape[1:])
    jac = []
    for m in boot_means:
        boot = top_heads(m, k)
        jac.append(jaccard(full, boot))
        for h in boot:
            freq[h.layer, h.head] += 1
    return float(np.mean(jac)), freq / n_boot


def chance_overlap(n_shared: int, k: int, n_heads: int) -> tuple[float, float]:
    """Two top-k sets among ``n_heads`` heads sharing ``n_shared``: the number two independent uniformly random
    k-sets share on average (k^2 / n_heads), and the chance that they share at least ``n_shared`` (hypergeometric
    upper tail). The yardstick for a Jaccard across models of different head counts: 2 shared heads of 10 is likely
    among 72 heads and rare among 270. Ranked heads are not random sets, so it is a reference, not a test of a
    mechanism."""
    from scipy.stats import hypergeom

    return k * k / n_heads, float(hypergeom.sf(n_shared - 1, n_heads, k, k))


def topk_overlap(a: HeadSet, b: HeadSet, n_heads: int | None = None) -> dict:
    """Two top-k sets compared, the one overlap row every study writes: ``jaccard``, ``n_shared`` and the heads
    ``shared`` ("none" when none); with ``n_heads`` (the model's head count) also ``chance_shared`` and ``p_chance``
    (:func:`chance_overlap`), the scale on which models of different sizes compare."""
    shared = a & b
    row = {"jaccard": jaccard(a, b), "n_shared": len(shared), "shared": str(shared) or "none"}
    if n_heads is not None:
        row["chance_shared"], row["p_chance"] = chance_overlap(len(shared), len(a), n_heads)
    return row


def overlaps(ranking: Ranking) -> list[dict]:
    """Jaccard and the number of shared heads of every pair of families' top-k sets, at every k."""
    fams = ranking.families
    return [{"k": k, "set_a": a, "set_b": b, "jaccard": row["jaccard"], "shared": row["n_shared"]}
            for k in sorted(next(iter(ranking.sets.values()))) for i, a in enumerate(fams) for b in fams[i + 1:]
            for row in [topk_overlap(ranking.top(a, k), ranking.top(b, k))]]


def estimator_agreement(exact: torch.Tensor, approx: torch.Tensor, top: int = 10) -> dict:
    """Spearman ρ (per example and of the mean maps) and top-``top`` overlap between two ``[n, L, H]`` estimates."""
    from scipy.stats import spearmanr

    exact, approx = exact.reshape(len(exact), -1), approx.reshape(len(approx), -1)
    e_mean, a_mean = exact.mean(0), approx.mean(0)
    top = min(top, e_mean.numel())
    return {"n_examples": len(exact), "spearman_mean_scores": float(spearmanr(e_mean, a_mean).statistic),
            "spearman_per_example": [float(spearmanr(e, a).statistic) for e, a in zip(exact, approx)],
            f"top{top}_overlap": len(set(torch.topk(e_mean, top).indices.tolist())
                                     & set(torch.topk(a_mean, top).indices.tolist()))}


def exact_check(ctx: ScoringContext, n_examples: int) -> dict | None:
    """Exact PCS of the first ``n_examples`` discovery examples against the attribution estimate (checkpointed)."""
    if ctx.cfg.estimator != "attribution" or not n_examples:
        return None
    setup, ck = ctx.setup, ctx.run.checkpoint("exact_check")
    chosen = setup.split.discovery[:n_examples]
    for ex in tqdm([e for e in chosen if e.example_id not in ck], desc="exact PCS check"):
        _, deltas = setup.call(head_effects, setup.model, setup.tokenized(ex.example_id, "own"),
                               ablation=setup.ablation, backend=setup.backend,
                               what=f"exact PCS check on {ex.example_id}")
        ck.add(ex.example_id, deltas=deltas)
    exact = torch.tensor([ck.get(e.example_id)["deltas"] for e in chosen])
    idx = [ctx.effects.example_ids.index(e.example_id) for e in chosen]
    return {**estimator_agreement(exact, ctx.effects.of("own")[idx]),
            "passes_per_example": {"attribution": "1 forward + 1 backward",
                                   "exact": f"1 clean + {setup.shape.n_layers} batched chunks"}}
