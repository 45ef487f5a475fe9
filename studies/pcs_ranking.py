"""PCS ranking study: score every head on the discovery split, compare with retrieval and induction heads.

    python -m studies.pcs_ranking --preset quick --model smollm2-135m --data conventions2012 [--method exact]

Writes ``results/<model>/<data>/pcs_ranking/``: head_scores.csv, per_example.csv, top_heads.json, heatmaps,
overlap tables (Jaccard of PCS top-k with retrieval / induction top-k), top-k stability under bootstrap resampling,
and manifest.json. Killed mid-run, it resumes from effects.jsonl without recomputing finished examples.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from harness import plots, tables
from harness.experiment import common_args, config_of, finish_args, prepare
from harness.heads import HeadSet
from harness.induction_heads import induction_scores
from harness.models import load_model
from harness.pcs import PCSScores, head_attributions, head_effects, top_heads
from harness.retrieval_heads import needle_prompts, retrieval_scores
from harness.runs import Run, write_csv, write_json
from harness.stats import bootstrap_ci

log = logging.getLogger("harness")


def parse(argv=None):
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["exact", "attribution"], help="exact ablation or attribution patching")
    ap.add_argument("--check-exact", type=int, help="with attribution: also score the first N discovery examples "
                                                    "exactly and report the agreement (Spearman, top-10 overlap)")
    ap.add_argument("--mode", choices=["zero"], default="zero", help="ablation used for scoring")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for CIs and top-k stability")
    ap.add_argument("--retrieval-prompts", type=int)
    ap.add_argument("--induction-sequences", type=int)
    args = finish_args(ap.parse_args(argv))
    args.top_k = sorted(set(args.ks))
    return args


def score_examples(setup, args, run: Run) -> PCSScores:
    """Per discovery example, every head's loss increase with and without the profile (checkpointed)."""
    ck = run.checkpoint("effects")
    todo = [e for e in setup.split.discovery if e.example_id not in ck]
    for ex in tqdm(todo, desc=f"PCS ({args.method})", initial=len(ck), total=len(setup.split.discovery)):
        row = {}
        for profile in (True, False):
            item = setup.scored(ex.example_id, profile=profile, max_target_tokens=args.max_target_tokens)
            score = head_effects if args.method == "exact" else head_attributions
            clean, deltas = setup.call(score, setup.model, item, mode=args.mode, remote=setup.remote,
                                       what=f"PCS {args.method} on {ex.example_id} (profile={profile})")
            row["with" if profile else "without"] = deltas.reshape(setup.shape.n_layers, setup.shape.n_heads)
            row["clean_with" if profile else "clean_without"] = clean
        ck.add(ex.example_id, user_id=ex.user_id, **row)
    recs = [ck.get(e.example_id) for e in setup.split.discovery]
    return PCSScores(
        example_ids=[r["key"] for r in recs], user_ids=[r["user_id"] for r in recs],
        with_profile=torch.tensor([r["with"] for r in recs]), without_profile=torch.tensor([r["without"] for r in recs]),
        clean_with=torch.tensor([r["clean_with"] for r in recs]),
        clean_without=torch.tensor([r["clean_without"] for r in recs]))


def exact_agreement(setup, args, run: Run, scores: PCSScores) -> dict | None:
    """Spearman rho and top-10 overlap between attribution and exact PCS on the first N discovery examples."""
    if args.method != "attribution" or not args.check_exact:
        return None
    from scipy.stats import spearmanr

    ck = run.checkpoint("exact_check")
    chosen = setup.split.discovery[: args.check_exact]
    for ex in tqdm([e for e in chosen if e.example_id not in ck], desc="exact PCS check"):
        item = setup.scored(ex.example_id, profile=True, max_target_tokens=args.max_target_tokens)
        _, deltas = setup.call(head_effects, setup.model, item, mode=args.mode, remote=setup.remote,
                               what=f"exact PCS check on {ex.example_id}")
        ck.add(ex.example_id, deltas=deltas)
    exact = torch.tensor([ck.get(e.example_id)["deltas"] for e in chosen])
    idx = [scores.example_ids.index(e.example_id) for e in chosen]
    approx = scores.with_profile[idx].reshape(len(chosen), -1)
    per_example = [float(spearmanr(exact[i], approx[i]).statistic) for i in range(len(chosen))]
    e_mean, a_mean = exact.mean(0), approx.mean(0)
    top = min(10, e_mean.numel())
    out = {"n_examples": len(chosen), "spearman_mean_scores": float(spearmanr(e_mean, a_mean).statistic),
           "spearman_per_example": per_example,
           "top10_overlap": len(set(torch.topk(e_mean, top).indices.tolist())
                                & set(torch.topk(a_mean, top).indices.tolist())),
           "passes_per_example": {"attribution": "1 forward + 1 backward",
                                  "exact": f"1 clean + {setup.shape.n_layers} batched chunks"}}
    write_json(run.path("agreement.json"), out)
    return out


def baseline_scores(setup, args, run: Run) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Retrieval (Wu et al.) and induction scores per head, computed once per run folder."""
    path = run.path("baseline_scores.json")
    if path.exists():
        saved = pd.read_json(path, typ="series")
        return torch.tensor(saved["retrieval"]), torch.tensor(saved["induction"]), dict(saved["info"])
    eager = load_model(args.model, attn_implementation="eager")
    prompts = needle_prompts(eager.tokenizer, args.retrieval_prompts, seed=args.seed,
                             corpus="debates2016" if args.data == "conventions2012" else "conventions2012")
    retrieval = retrieval_scores(eager, prompts, max_new_tokens=24)
    induction = induction_scores(eager, n_sequences=args.induction_sequences, seq_len=48, seed=args.seed)
    info = {"retrieval_prompts": len(prompts), "retrieval_recovered": int(retrieval.recovered.sum()),
            "retrieval_recall": retrieval.recall, "retrieval_heads_at_0.1": str(retrieval.heads(0.1)),
            "induction_sequences": args.induction_sequences}
    write_json(path, {"retrieval": retrieval.scores.tolist(), "induction": induction.scores.tolist(), "info": info})
    return retrieval.scores, induction.scores, info


def jaccard(a: HeadSet, b: HeadSet) -> float:
    union = len(a | b)
    return len(a & b) / union if union else float("nan")


def topk_stability(per_example: torch.Tensor, k: int, users: list[str], n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """Mean Jaccard between the full-data top-k and the top-k of user-clustered bootstrap resamples,
    and each head's selection frequency."""
    rng = np.random.default_rng(seed)
    full = top_heads(per_example.mean(0), k)
    uniq = sorted(set(users))
    idx_of = {u: [i for i, v in enumerate(users) if v == u] for u in uniq}
    freq = np.zeros(per_example.shape[1:])
    jac = []
    for _ in range(n_boot):
        pick = [i for u in rng.choice(uniq, len(uniq)) for i in idx_of[u]]
        boot = top_heads(per_example[pick].mean(0), k)
        jac.append(jaccard(full, boot))
        for h in boot:
            freq[h.layer, h.head] += 1
    return float(np.mean(jac)), freq / n_boot


def main(argv=None) -> Run:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = prepare(args)
    config = config_of(args, "method", "mode", "check_exact")
    run = Run.open(args.results, args.model, args.data, "pcs_ranking", config, fresh=args.fresh)
    scores = score_examples(setup, args, run)
    agreement = exact_agreement(setup, args, run, scores)
    retrieval, induction, info = baseline_scores(setup, args, run)
    L, H = setup.shape.n_layers, setup.shape.n_heads
    users = scores.user_ids

    # per-head table with user-clustered bootstrap CIs
    rows = []
    for layer in range(L):
        for head in range(H):
            w = scores.with_profile[:, layer, head].numpy()
            c = scores.contrast[:, layer, head].numpy()
            lo, hi = bootstrap_ci(w, clusters=users, n_boot=args.n_boot, seed=args.seed)
            clo, chi = bootstrap_ci(c, clusters=users, n_boot=args.n_boot, seed=args.seed)
            rows.append({"layer": layer, "head": head, "pcs": float(w.mean()), "pcs_ci_low": lo, "pcs_ci_high": hi,
                         "contrast_pcs": float(c.mean()), "contrast_ci_low": clo, "contrast_ci_high": chi,
                         "retrieval_score": float(retrieval[layer, head]),
                         "induction_score": float(induction[layer, head])})
    head_table = pd.DataFrame(rows)
    write_csv(run.path("head_scores.csv"), head_table)

    tidy = [{"example_id": ex, "user_id": u, "layer": layer, "head": head,
             "effect_with_profile": float(scores.with_profile[i, layer, head]),
             "effect_without_profile": float(scores.without_profile[i, layer, head])}
            for i, (ex, u) in enumerate(zip(scores.example_ids, users)) for layer in range(L) for head in range(H)]
    write_csv(run.path("per_example.csv"), pd.DataFrame(tidy))
    write_csv(run.path("clean_losses.csv"), pd.DataFrame({
        "example_id": scores.example_ids, "user_id": users, "loss_with_profile": scores.clean_with.numpy(),
        "loss_without_profile": scores.clean_without.numpy(), "profile_gain": scores.profile_gain.numpy()}))

    # top-k sets of every family, overlaps and stability
    sets, overlap, stability = {}, [], []
    for k in args.top_k:
        fam = {"pcs": top_heads(scores.pcs, k), "contrast_pcs": top_heads(scores.contrast_pcs, k),
               "retrieval": top_heads(retrieval, k), "induction": top_heads(induction, k)}
        sets[str(k)] = {name: str(hs) for name, hs in fam.items()}
        for a, b in [("pcs", "retrieval"), ("pcs", "induction"), ("pcs", "contrast_pcs"),
                     ("contrast_pcs", "retrieval"), ("contrast_pcs", "induction"), ("retrieval", "induction")]:
            overlap.append({"k": k, "set_a": a, "set_b": b, "jaccard": jaccard(fam[a], fam[b]),
                            "shared": len(fam[a] & fam[b])})
        for name, per_ex in [("pcs", scores.with_profile), ("contrast_pcs", scores.contrast)]:
            mean_j, freq_k = topk_stability(per_ex, k, users, min(args.n_boot, 200), args.seed)
            if name == "pcs":
                freq = freq_k  # kept for the largest k (the loop ends there): the stability heatmap
            stability.append({"k": k, "set": name, "bootstrap_mean_jaccard": mean_j})
    write_json(run.path("top_heads.json"), {"discovery_ids": scores.example_ids, "sets": sets,
                                             "retrieval_heads_threshold_0.1": info["retrieval_heads_at_0.1"]})
    tables.write_tables(overlap, [("k", "k"), ("set_a", "set A"), ("set_b", "set B"), ("jaccard", "Jaccard"),
                                  ("shared", "shared heads")], run.root, "overlap")
    tables.write_tables(stability, [("k", "k"), ("set", "head set"),
                                    ("bootstrap_mean_jaccard", "bootstrap mean Jaccard")], run.root, "stability")

    kmax = max(args.top_k)
    top = [(h.layer, h.head) for h in top_heads(scores.pcs, kmax)]
    plots.heatmap(scores.pcs.numpy(), run.path("pcs_heatmap.png"), title=f"PCS (loss increase), {args.data}",
                  label="mean Δ NLL", marked=top)
    plots.heatmap(scores.contrast_pcs.numpy(), run.path("contrast_pcs_heatmap.png"),
                  title=f"profile-contrast PCS, {args.data}", label="Δ NLL with − without profile",
                  marked=[(h.layer, h.head) for h in top_heads(scores.contrast_pcs, kmax)])
    plots.heatmap(retrieval.numpy(), run.path("retrieval_heatmap.png"), title="retrieval score (Wu et al.)",
                  label="score", diverging=False)
    plots.heatmap(induction.numpy(), run.path("induction_heatmap.png"), title="induction score", label="score",
                  diverging=False)
    plots.heatmap(freq, run.path("pcs_topk_stability.png"), title=f"bootstrap frequency in PCS top-{kmax}",
                  label="selection frequency", diverging=False, marked=top)
    run.manifest(seed=args.seed, model=args.model, data=args.data, split=setup.split_record(),
                 examples=setup.examples, extra={"baselines": info, "agreement_with_exact": agreement,
                                                 "n_discovery": len(scores.example_ids),
                                                 "n_users": len(set(users))})
    log.info("PCS top-%d: %s", kmax, sets[str(kmax)]["pcs"])
    return run


if __name__ == "__main__":
    main()
