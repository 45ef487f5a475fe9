"""Measure head sets on evaluation examples: ablated gold losses per prompt variant, checkpointed by set *content*.

A head set is identified by its heads (``str(HeadSet)``), never by a display name, so a re-ranking that changes
``pcs@10`` measures the new heads instead of reusing the old ones' losses; sets with equal heads are measured once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from ..data.tokens import SCORED_POSITIONS
from ..intervene.heads import HeadSet, all_heads, copy_heads, moved_heads, random_headset
from ..analysis.metrics import gold_marker_mask, marker_nll
from ..intervene.pcs import ablated_losses
from ..generation.steering import StyleVectors, chosen_style, fit_and_choose
from ..runs.files import write_json


@dataclass(frozen=True)
class NamedSet:
    """A head set in a comparison: its table name, family, size k, heads, and (random sets) what it is matched to."""

    name: str
    family: str
    k: int
    heads: HeadSet
    matched_to: str = ""
    moved: str = ""  # a matched random set whose layer counts differ from its match's (``heads.moved_heads``)


def copy_head_unions(ranking: Any, k: int, *, members: Sequence[str], min_overlap: float,
                     name: str = "copy_heads") -> dict[str, tuple[str, ...]]:
    """``{name: members}`` where the ranking holds both copy-head families and their top-``k`` share at least
    ``min_overlap`` of their heads (``heads.copy_heads``): the set they are measured and tested as, once; else {}."""
    if not set(members) <= set(ranking.families):
        return {}
    a, b = (ranking.top(m, k) for m in members)
    return {name: tuple(members)} if copy_heads(a, b, min_overlap=min_overlap).merged else {}


DAMAGE_SIZES = (1, 2, 3, 5, 8, 13, 21)  # head-set sizes of the damage-matched null (cycled)


def comparison_sets(ranking: Any, shape: Any, families: Sequence[str], k_heads: Sequence[int], *, n_random: int,
                    n_random_other: int, n_unmatched: int, seed: int, matched_to: str = "each",
                    n_damage: int = 0, exclude_named: bool = True,
                    unions: Mapping[str, Sequence[str]] | None = None) -> list[NamedSet]:
    """Every set of the sweep, all drawn from one seeded sampler:

    - each family's top-k (a family named in ``unions``: the union of its member families' top-k);
    - random sets matched per layer to each family's set (``matched_to="each"``) or to the first family's only
      (``"primary"``): ``n_random`` at the largest k, ``n_random_other`` at the others; each names its match. With
      ``exclude_named`` a matched set never holds its named set's own heads (a null that partly measures the named
      heads cannot reject); a layer the named set fills takes its share from the nearest layers with free heads, and
      the set records the move (``moved``);
    - uniform random sets of size k;
    - ``n_damage`` random sets of many sizes and layers (``random_damage``, k = their size): the cloud that relates
      the specific gain a set removes to the generic damage it does (``outcomes.damage_matched``).
    """
    rng = random.Random(seed)
    kmax = max(k_heads)
    nulls_for = list(families) if matched_to == "each" else [families[0]]
    out: list[NamedSet] = []
    for k in k_heads:
        n_rand = n_random if k == kmax else n_random_other
        n_unm = n_unmatched if k == kmax else max(1, n_unmatched * n_random_other // max(n_random, 1))
        named = {f: HeadSet(h for m in unions[f] for h in ranking.top(m, k)) if f in (unions or {}) else
                 ranking.top(f, k) for f in families}
        out += [NamedSet(f"{f}@{k}", f, k, named[f]) for f in families]
        for f in nulls_for:
            exclude = named[f] if exclude_named else None
            for i in range(n_rand):
                drawn = random_headset(shape, rng, like=named[f], exclude=exclude, borrow=exclude_named)
                out.append(NamedSet(f"random_matched:{f}#{i}@{k}", "random_matched", k, drawn, f,
                                    moved_heads(named[f], drawn)))
        out += [NamedSet(f"random_uniform#{i}@{k}", "random_uniform", k, random_headset(shape, rng, k=k))
                for i in range(n_unm)]
    total = shape.n_layers * shape.n_heads
    for i in range(n_damage):
        size = min(DAMAGE_SIZES[i % len(DAMAGE_SIZES)], total)
        lo = rng.randrange(shape.n_layers)  # a band of layers, so sets differ in depth as well as size
        band = HeadSet((layer, h) for layer in range(lo, min(shape.n_layers, lo + max(1, shape.n_layers // 3)))
                       for h in range(shape.n_heads))
        pool = band if len(band) >= size else all_heads(shape)
        out.append(NamedSet(f"random_damage#{i}", "random_damage", size, HeadSet(rng.sample(list(pool.heads), size))))
    return out


def ablation_losses(setup: Any, run: Any, sets: Sequence[NamedSet], conditions: Sequence[str], *,
                    batch_size: int | None = None) -> pd.DataFrame:
    """Gold loss of every evaluation example under every set's ablation (``setup.ablation``: mode, reference and
    positions), per condition: one tidy row per
    (example, set) with ``loss_<condition>`` and ``clean_<condition>`` columns; on a planted corpus also
    ``marker_loss_<condition>`` and ``marker_clean_<condition>``, the NLL of the rule's tokens alone (controls: the
    tokens it would change; NaN where no scored token is one), from the same forwards.

    Checkpoint rows are ``<example>|<condition>`` -> {heads: loss} (and {heads: marker NLL}); only heads not yet
    measured are computed, so a resume or a changed ranking measures exactly what is missing.
    """
    setup.ablation.supported("ablation_losses", SCORED_POSITIONS)  # before any work
    ck = run.checkpoint("losses")
    by_name = {str(s.heads): s.heads for s in sets}  # the set itself, not its text re-parsed (an empty set is "")
    unique = sorted(by_name)
    masks = {e.example_id: gold_marker_mask(setup.tokenizer, e, setup.prompts[e.example_id].target,
                                            max_target_tokens=setup.max_target_tokens)
             for e in setup.split.evaluation if e.planted is not None}

    def missing_in(key: str, ex: Any) -> list[str]:
        rec = ck.records.get(key, {})
        done = set(rec.get("losses", {}))
        if ex.example_id in masks:  # a record from before the marker outcome measures its sets again
            done &= set(rec.get("markers", {}))
        return [h for h in unique if h not in done]

    todo = [(e, c) for e in setup.split.evaluation for c in conditions if missing_in(f"{e.example_id}|{c}", e)]
    for ex, cond in tqdm(todo, desc="ablation sets", unit="example×condition"):
        key = f"{ex.example_id}|{cond}"
        missing = missing_in(key, ex)
        rec = ck.records.get(key, {})
        have = {h: v for h, v in rec.get("losses", {}).items() if h not in missing}
        item = setup.tokenized(ex.example_id, cond)
        mask = masks.get(ex.example_id)
        clean, losses = setup.call(ablated_losses, setup.model, item, [by_name[h] for h in missing], setup.ablation,
                                   batch_size=batch_size, per_token=mask is not None, backend=setup.backend,
                                   what=f"ablation sets on {key}")
        if mask is None:
            ck.add(key, user_id=ex.user_id, clean=clean, losses={**have, **dict(zip(missing, losses.tolist()))})
            continue
        marker = marker_nll(torch.cat([clean[None], losses]), mask)  # None: no marker token among the scored ones
        values = [None] * (len(missing) + 1) if marker is None else marker.tolist()
        have_markers = {h: v for h, v in rec.get("markers", {}).items() if h not in missing}
        ck.add(key, user_id=ex.user_id, clean=float(clean.mean()),
               losses={**have, **dict(zip(missing, losses.mean(-1).tolist()))},
               marker_clean=values[0], markers={**have_markers, **dict(zip(missing, values[1:]))})
    rows = []
    nan = float("nan")
    for ex in setup.split.evaluation:
        recs = {c: ck.get(f"{ex.example_id}|{c}") for c in conditions}
        for s in sets:
            row = {"example_id": ex.example_id, "user_id": ex.user_id, "set": s.name, "family": s.family, "k": s.k,
                   "heads": str(s.heads), "matched_to": s.matched_to}
            for c, r in recs.items():
                row[f"loss_{c}"], row[f"clean_{c}"] = r["losses"][str(s.heads)], r["clean"]
            if ex.example_id in masks:
                for c, r in recs.items():
                    marker, clean = r["markers"][str(s.heads)], r["marker_clean"]
                    row[f"marker_loss_{c}"] = nan if marker is None else marker
                    row[f"marker_clean_{c}"] = nan if clean is None else clean
            rows.append(row)
    return pd.DataFrame(rows)


def generations(setup: Any, run: Any, specs: Sequence[Any], *, max_new_tokens: int, max_prompt_tokens: int,
                batch_size: int = 8, split: str = "evaluation") -> dict[str, list[str]]:
    """Each generation method's texts on the ``split`` examples, checkpointed by split and the method's content."""
    from ..generation.methods import build_prompts, generate

    ck = run.checkpoint("generations")
    examples = getattr(setup.split, split)
    for spec in tqdm([s for s in specs if f"{split}|{s.key}" not in ck], desc=f"generation methods ({split})"):
        prompts = build_prompts(spec, examples, setup.tokenizer, max_prompt_tokens=max_prompt_tokens,
                                chat=setup.chat, framing=setup.framing)
        ck.add(f"{split}|{spec.key}", texts=generate(setup.model, prompts, spec, max_new_tokens=max_new_tokens,
                                                     sampling=setup.sampling,
                                                     batch_size=batch_size, backend=setup.backend))
    return {spec.name: ck.get(f"{split}|{spec.key}")["texts"] for spec in specs}


def score_generations(setup: Any, texts: dict[str, list[str]], metrics: Sequence[str],
                      split: str = "evaluation") -> pd.DataFrame:
    """One row per (generation method, evaluation example): the text, its ``metrics`` against the gold output (style
    similarity against the user's profile), and whether it continues the text (``continues``: no quoted repeat of the
    lead, no commentary). On a planted corpus also ``group`` (planted / control) and ``marker_rate``: the share of the
    text's opportunities where it follows the user's rule (NaN where it has none; controls: their shadow rule)."""
    from ..analysis.metrics import continues_text, marker_rate, score_examples

    evaluation = getattr(setup.split, split)
    refs = [setup.prompts[e.example_id].target for e in evaluation]
    profiles = [[p.text for p in e.profile] for e in evaluation] if "style_similarity" in metrics else None

    def planted(e: Any, text: str) -> dict:
        if e.planted is None:
            return {}
        rate = marker_rate(text, e.planted.rule).rate
        return {"group": "control" if e.planted.control else "planted",
                "marker_rate": float("nan") if rate is None else rate}
    return pd.DataFrame([{"generation": name, "example_id": e.example_id, "user_id": e.user_id, "text": text,
                          **{m: score[m] for m in metrics}, "continues": float(continues_text(text, e.lead)),
                          **planted(e, text)}
                         for name, ts in texts.items()
                         for e, text, score in zip(evaluation, ts, score_examples(ts, refs, profiles))])


def style_choice(setup: Any, run: Any, cfg: Any) -> tuple[StyleVectors, float]:
    """The DPS study's StyleVector baseline: fitted on the evaluation users' profiles and discovery users, (layer,
    alpha) chosen on discovery examples (``cfg``: a DPS config's style options); an artefact keyed by the settings it
    depends on."""
    layers = cfg.style_layers or sorted({setup.shape.n_layers // 3, 2 * setup.shape.n_layers // 3})
    users = {e.user_id for e in setup.split.evaluation}
    fit = [e for e in setup.examples if e.user_id in users] + list(setup.split.discovery)
    depends = cfg.subset("model", "data", "split", "n", "seed", "eval_fraction", "by_user", "max_prompt_tokens",
                         "max_new_tokens", "min_new_tokens", "style_alphas", "chat") | {"style_layers": layers,
                                                                                        "framing": setup.framing}
    saved = run.artifact("stylevector", depends, lambda: fit_and_choose(
        setup.model, fit, setup.split.discovery, layers, cfg.style_alphas, max_new_tokens=cfg.max_new_tokens,
        max_prompt_tokens=cfg.max_prompt_tokens, chat=setup.chat, framing=setup.framing, sampling=setup.sampling,
        backend=setup.backend))
    write_json(run.path("stylevector_choice.json"), {k: saved[k] for k in ("layer", "alpha", "grid_rougeL")})
    return chosen_style(saved)
