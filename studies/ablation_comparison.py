"""Ablation comparison: do preference (PCS) heads matter more than retrieval, induction and random heads?

    python -m studies.ablation_comparison --preset quick --model smollm2-135m --data conventions2012

Head sets come from the PCS ranking study's folder (discovery split); every number here is measured on the
disjoint evaluation split (the study refuses otherwise). Per evaluation example and head set it records the gold
NLL with and without the profile under ablation, from which: (a) NLL increase with the profile, (b) profile gain
lost, (c) generic damage (NLL increase without the profile); and for the largest k, (d) ROUGE-L of greedy
generations. Statistics: paired Wilcoxon and permutation tests (user-clustered), user-clustered bootstrap CIs,
d_z, Holm across each table, and each set's position in the layer-matched random-set null.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from harness import plots, stats, tables
from harness.ablation import ablate
from harness.data import assert_not_used_for_ranking
from harness.experiment import common_args, config_of, finish_args, prepare
from harness.heads import HeadSet, random_headset
from harness.metrics import rouge
from harness.pcs import ablated_losses, top_heads
from harness.runs import Run, slug, write_csv, write_json

log = logging.getLogger("harness")
FAMILIES = ("pcs", "contrast_pcs", "retrieval", "induction")
OUTCOMES = {
    "nll_increase": "NLL increase with profile",
    "gain_lost": "profile gain lost",
    "generic_damage": "NLL increase without profile",
}


def parse(argv=None):
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--n-random", type=int, help="layer-matched random sets at the main (largest) k: the null")
    ap.add_argument("--n-random-other", type=int, help="layer-matched random sets at the other k (the null band)")
    ap.add_argument("--n-unmatched", type=int, default=None, help="uniform random sets per k (default n_random/5)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-eval", type=int, help="use only the first N evaluation examples (a compute budget; the "
                                                 "manifest records which examples were used)")
    ap.add_argument("--n-boot", type=int, default=5000)
    ap.add_argument("--n-perm", type=int, default=5000)
    ap.add_argument("--pcs-run", help="folder of the PCS ranking run (default: the sibling pcs_ranking folder)")
    args = finish_args(ap.parse_args(argv))
    args.n_unmatched = args.n_unmatched if args.n_unmatched is not None else max(1, args.n_random // 5)
    args.n_random_other = min(args.n_random_other, args.n_random)
    return args


def head_sets(head_scores: pd.DataFrame, shape, ks, n_random: int, n_random_other: int, n_unmatched: int,
              seed: int) -> list[dict]:
    """Every head set of the sweep, as records {name, family, k, heads}."""
    def grid(col):
        return torch.tensor(head_scores.sort_values(["layer", "head"])[col].to_numpy()).reshape(shape.n_layers,
                                                                                              shape.n_heads)
    maps = {"pcs": grid("pcs"), "contrast_pcs": grid("contrast_pcs"), "retrieval": grid("retrieval_score"),
            "induction": grid("induction_score")}
    rng = random.Random(seed)
    out = []
    for k in ks:
        n_rand = n_random if k == max(ks) else n_random_other
        n_unm = n_unmatched if k == max(ks) else max(1, n_unmatched * n_random_other // max(n_random, 1))
        named = {f: top_heads(maps[f], k) for f in FAMILIES}
        out += [{"name": f"{f}@{k}", "family": f, "k": k, "heads": named[f]} for f in FAMILIES]
        out += [{"name": f"random_matched#{i}@{k}", "family": "random_matched", "k": k,
                 "heads": random_headset(shape, rng, like=named["pcs"])} for i in range(n_rand)]
        out += [{"name": f"random_uniform#{i}@{k}", "family": "random_uniform", "k": k,
                 "heads": random_headset(shape, rng, k=k)} for i in range(n_unm)]
    return out


def measure(setup, args, run: Run, sets: list[dict]) -> pd.DataFrame:
    """Ablated gold NLL (with / without profile) of every set on every evaluation example (checkpointed)."""
    ck = run.checkpoint("losses")
    names = [s["name"] for s in sets]
    for ex in tqdm([e for e in setup.split.evaluation if e.example_id not in ck], desc="ablation sets",
                   initial=len(ck), total=len(setup.split.evaluation)):
        rec = {}
        for profile in (True, False):
            item = setup.scored(ex.example_id, profile=profile, max_target_tokens=args.max_target_tokens)
            clean, losses = setup.call(ablated_losses, setup.model, item, [s["heads"] for s in sets],
                                       batch_size=args.batch_size, remote=setup.remote,
                                       what=f"ablation sets on {ex.example_id} (profile={profile})")
            key = "with" if profile else "without"
            rec[f"clean_{key}"], rec[key] = clean, losses.tolist()
        ck.add(ex.example_id, user_id=ex.user_id, names=names, **rec)
    rows = []
    for ex in setup.split.evaluation:
        r = ck.get(ex.example_id)
        if r["names"] != names:
            raise RuntimeError(f"checkpoint for {ex.example_id} holds other head sets; rerun with --fresh")
        for s, lw, lwo in zip(sets, r["with"], r["without"]):
            gain_clean = r["clean_without"] - r["clean_with"]
            rows.append({"example_id": ex.example_id, "user_id": r["user_id"], "set": s["name"], "family": s["family"],
                         "k": s["k"], "heads": str(s["heads"]), "loss_with": lw, "loss_without": lwo,
                         "clean_with": r["clean_with"], "clean_without": r["clean_without"],
                         "nll_increase": lw - r["clean_with"], "generic_damage": lwo - r["clean_without"],
                         "gain_lost": gain_clean - (lwo - lw)})
    return pd.DataFrame(rows)


def generations(setup, args, run: Run, sets: list[dict]) -> pd.DataFrame:
    """Greedy generations with each named set (largest k) ablated, and unablated; ROUGE-L against the gold."""
    ck = run.checkpoint("generations")
    kmax = max(args.ks)
    named = [s for s in sets if s["k"] == kmax and s["family"] in FAMILIES]
    variants = [("none", HeadSet())] + [(s["name"], s["heads"]) for s in named]
    for ex in tqdm([e for e in setup.split.evaluation if e.example_id not in ck], desc="generations",
                   initial=len(ck), total=len(setup.split.evaluation)):
        prompt = setup.prompts[ex.example_id].with_profile
        ids = setup.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        rows = len(variants)
        with setup.model.generate(max_new_tokens=args.max_new_tokens, do_sample=False,
                                  pad_token_id=setup.tokenizer.eos_token_id, remote=setup.remote) as tracer:
            with tracer.invoke({"input_ids": ids.expand(rows, -1), "attention_mask": torch.ones(rows, ids.shape[1],
                                                                                                 dtype=torch.long)}):
                for _ in tracer.all():
                    ablate(setup.model, [hs for _, hs in variants])
            with tracer.invoke():
                out = tracer.result.save()
        texts = setup.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        ck.add(ex.example_id, user_id=ex.user_id, texts=dict(zip([n for n, _ in variants], texts)))
    rows = []
    for ex in setup.split.evaluation:
        r = ck.get(ex.example_id)
        for name, text in r["texts"].items():
            rows.append({"example_id": ex.example_id, "user_id": r["user_id"], "set": name, "text": text,
                         "rougeL": rouge(text, setup.prompts[ex.example_id].target)["rougeL"]})
    return pd.DataFrame(rows)


def wide_at(df: pd.DataFrame, outcome: str, k: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per evaluation example and one column per head set at ``k``; the users; the random null
    (the mean effect of each layer-matched random set)."""
    wide = df[df.k == k].pivot_table(index=["example_id", "user_id"], columns="set", values=outcome).reset_index()
    null = wide[[c for c in wide.columns if str(c).startswith("random_matched#")]].mean(axis=0).to_numpy()
    return wide, wide["user_id"].to_numpy(), null


def comparison_table(df: pd.DataFrame, outcome: str, k: int, args) -> list[stats.Comparison]:
    """PCS@k against every other named set and the random-matched mean, with the random null for each."""
    wide, users, null = wide_at(df, outcome, k)
    random_mean = wide[[c for c in wide.columns if str(c).startswith("random_matched#")]].mean(axis=1).to_numpy()
    comps = []
    pcs = wide[f"pcs@{k}"].to_numpy()
    for base in ["contrast_pcs", "retrieval", "induction"]:
        comps.append(stats.compare_paired(pcs, wide[f"{base}@{k}"].to_numpy(), name=f"pcs@{k}", baseline=f"{base}@{k}",
                                          outcome=outcome, users=users, n_boot=args.n_boot, n_perm=args.n_perm,
                                          seed=args.seed, null=null))
    comps.append(stats.compare_paired(pcs, random_mean, name=f"pcs@{k}", baseline=f"random_matched_mean@{k}",
                                      outcome=outcome, users=users, n_boot=args.n_boot, n_perm=args.n_perm,
                                      seed=args.seed, null=null))
    return comps


def set_summary(df: pd.DataFrame, outcome: str, k: int, args) -> list[dict]:
    """Rows = named head sets at k: mean effect, CI, d_z (vs zero), null percentile."""
    wide, users, null = wide_at(df, outcome, k)
    out = []
    for fam in FAMILIES:
        v = wide[f"{fam}@{k}"].to_numpy()
        lo, hi = stats.bootstrap_ci(v, clusters=users, n_boot=args.n_boot, seed=args.seed)
        pct, p_null = stats.null_position(float(v.mean()), null)
        out.append({"set": fam, "k": k, "outcome": outcome, "mean": float(v.mean()), "ci": (lo, hi),
                    "d_z": stats.cohens_dz(v), "p_wilcoxon": stats.wilcoxon_p(v, clusters=users),
                    "null_percentile": pct, "p_null": p_null})
    return out


COMPARISON_COLUMNS = [("name", "head set"), ("baseline", "vs"), ("mean_a", "mean"), ("mean_b", "baseline mean"),
                      ("mean_diff", "diff"), ("ci", "95% CI"), ("d_z", "d_z"), ("p_wilcoxon", "p (Wilcoxon)"),
                      ("p_permutation", "p (perm.)"), ("p_holm", "p_Holm"), ("null_percentile", "null pct.")]


def main(argv=None) -> Run:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = prepare(args)
    if args.max_eval:
        setup.split = dataclasses.replace(setup.split, evaluation=setup.split.evaluation[: args.max_eval])
    pcs_dir = Path(args.pcs_run) if args.pcs_run else run_root(args)
    if not (pcs_dir / "top_heads.json").exists():
        raise SystemExit(f"no PCS ranking in {pcs_dir}: run `python -m studies.pcs_ranking` with the same "
                         "--model/--data/--n/--seed first (or pass --pcs-run)")
    top = json.loads((pcs_dir / "top_heads.json").read_text())
    assert_not_used_for_ranking([e.example_id for e in setup.split.evaluation], top["discovery_ids"])
    head_scores = pd.read_csv(pcs_dir / "head_scores.csv")
    config = config_of(args, "ks", "n_random", "n_random_other", "n_unmatched", "max_new_tokens")
    config["pcs_run"] = str(pcs_dir)
    run = Run.open(args.results, args.model, args.data, "ablation_comparison", config, fresh=args.fresh)
    sets = head_sets(head_scores, setup.shape, args.ks, args.n_random, args.n_random_other, args.n_unmatched,
                     args.seed)
    write_json(run.path("head_sets.json"), [{**s, "heads": str(s["heads"])} for s in sets])
    df = measure(setup, args, run, sets)
    write_csv(run.path("per_example.csv"), df)
    gens = generations(setup, args, run, sets)
    write_csv(run.path("generations.csv"), gens)

    n_users = df.user_id.nunique()
    kmain = max(args.ks)
    # every named set's mean and CI at every k (the sweep; its k = kmain rows are the summary table)
    sweep = [row for outcome in OUTCOMES for k in args.ks for row in set_summary(df, outcome, k, args)]
    for outcome in OUTCOMES:
        comps = stats.with_holm(comparison_table(df, outcome, kmain, args))
        recs = [{**c.to_dict(), "ci": (c.ci_low, c.ci_high)} for c in comps]
        tables.write_tables(recs, COMPARISON_COLUMNS, run.root, f"comparison_{outcome}")
    tables.write_tables([r for r in sweep if r["k"] == kmain],
                        [("set", "head set"), ("outcome", "outcome"), ("mean", "mean effect"),
                         ("ci", "95% CI"), ("d_z", "d_z"), ("p_wilcoxon", "p (Wilcoxon, vs 0)"),
                         ("null_percentile", "null pct."), ("p_null", "p (null)")],
                        run.root, "set_summary")
    for outcome in OUTCOMES:
        nulls = {k: wide_at(df, outcome, k)[2] for k in args.ks}
        band = ([np.percentile(nulls[k], 2.5) for k in args.ks], [np.percentile(nulls[k], 97.5) for k in args.ks])
        curves = {}
        for fam in FAMILIES:
            rows = [r for r in sweep if r["set"] == fam and r["outcome"] == outcome]
            curves[fam] = (np.array([r["mean"] for r in rows]), np.array([r["ci"][0] for r in rows]),
                           np.array([r["ci"][1] for r in rows]))
        plots.effect_curves(args.ks, curves, run.path(f"effect_vs_k_{outcome}.png"), null_band=band,
                            title=f"{OUTCOMES[outcome]} vs k ({args.data}, n={df.example_id.nunique()})",
                            ylabel=OUTCOMES[outcome])
        plots.null_histogram(nulls[kmain], {r["set"]: r["mean"] for r in sweep
                                            if r["k"] == kmain and r["outcome"] == outcome},
                             run.path(f"null_{outcome}.png"), title=f"random layer-matched null, k={kmain}",
                             xlabel=OUTCOMES[outcome])
    write_csv(run.path("sweep.csv"), pd.DataFrame([{**r, "ci_low": r["ci"][0], "ci_high": r["ci"][1]}
                                                   for r in sweep]).drop(columns="ci"))
    rouge_rows = []
    for name, grp in gens.groupby("set"):
        lo, hi = stats.bootstrap_ci(grp.rougeL.to_numpy(), clusters=grp.user_id.to_numpy(), n_boot=args.n_boot,
                                    seed=args.seed)
        rouge_rows.append({"set": name, "rougeL": grp.rougeL.mean(), "ci": (lo, hi)})
    tables.write_tables(rouge_rows, [("set", "ablated set"), ("rougeL", "ROUGE-L"), ("ci", "95% CI")], run.root,
                        "generation_rouge")
    run.manifest(seed=args.seed, model=args.model, data=args.data, split=setup.split_record(),
                 examples=setup.examples, extra={"n_eval": int(df.example_id.nunique()), "n_users": int(n_users),
                                                 "k_main": kmain, "n_random": args.n_random,
                                                 "pcs_run": str(pcs_dir)})
    return run


def run_root(args) -> Path:
    """The PCS ranking folder that belongs to this model and dataset."""
    return Path(args.results) / slug(args.model) / slug(args.data) / "pcs_ranking"


if __name__ == "__main__":
    main()
