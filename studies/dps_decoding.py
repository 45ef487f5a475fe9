"""DPS decoding study: contrast full vs preference-heads-ablated logits, against every baseline.

    python -m studies.dps_decoding --preset quick --model smollm2-135m --data conventions2012

Methods on the evaluation split: no profile, profile in context, RAG (BM25 top-k), CAD, StyleVector (layer and
alpha chosen on discovery data), DPS with retrieval heads (= DeCoRe), with layer-matched random heads and with
preference (PCS) heads, plus a gamma sweep for DPS. Metrics per example: ROUGE-1/L, METEOR (exact+stem), style
similarity to the user's profile; optionally a pairwise LLM judge. Table: mean and user-clustered 95% CI per method,
and DPS variants against the best baseline (paired, Holm-corrected).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from harness import plots, stats, tables
from harness.data import assert_not_used_for_ranking
from harness.decoding import delta_logits_report, plot_delta_logits
from harness.experiment import common_args, config_of, finish_args, prepare
from harness.generation import MethodSpec, build_prompts, generate, layer_matched_random
from harness.heads import HeadSet
from harness.judge import CallableBackend, OpenAIChatBackend, judge_pairs
from harness.metrics import METEOR_VARIANT, score_examples
from harness.runs import Run, slug, write_csv, write_json
from harness.steering import fit_style_vectors, select_style

log = logging.getLogger("harness")
METRICS = ("rouge1", "rougeL", "meteor", "style_similarity")
BASELINES = ("no_profile", "profile", "rag", "cad", "stylevector")


def parse(argv=None):
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--dps-k", type=int, help="heads in the DPS head sets (default: the preset's largest k)")
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="gamma sweep for DPS")
    ap.add_argument("--gamma", type=float, default=1.0, help="gamma of the main DPS / CAD rows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--style-layers", type=int, nargs="+", help="StyleVector layers to try (default: at 1/3 and 2/3 depth)")
    ap.add_argument("--style-alphas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--judge", choices=["none", "local", "openai"], default="none",
                    help="pairwise judge of DPS-preference vs the best baseline (openai: OPENAI_BASE_URL + key)")
    ap.add_argument("--judge-model", default="gpt-4o-mini")
    ap.add_argument("--n-boot", type=int, default=5000)
    ap.add_argument("--n-perm", type=int, default=5000)
    ap.add_argument("--pcs-run", help="folder of the PCS ranking run (default: the sibling pcs_ranking folder)")
    args = finish_args(ap.parse_args(argv))
    args.dps_k = args.dps_k or max(args.ks)
    return args


def methods(setup, args, top: dict, style) -> list[MethodSpec]:
    """Every generation method of the table (baselines, DPS variants, and the gamma sweep)."""
    sets = top["sets"][str(args.dps_k)] if str(args.dps_k) in top["sets"] else None
    if sets is None:
        raise SystemExit(f"the PCS run has no top-{args.dps_k} sets (has {sorted(top['sets'])}); pass --dps-k")
    pref, retr = HeadSet.parse(sets["pcs"]), HeadSet.parse(sets["retrieval"])
    rand = layer_matched_random(pref, setup.shape, seed=args.seed)
    out = [MethodSpec("no_profile"), MethodSpec("profile"), MethodSpec.rag(k=args.k_profile),
           MethodSpec.cad(gamma=args.gamma, k=args.k_profile)]
    if style is not None:
        out.append(MethodSpec.stylevector(style[0], style[1]))
    out += [MethodSpec.dps(retr, args.gamma, source="retrieval", k=args.k_profile),
            MethodSpec.dps(rand, args.gamma, source="random", k=args.k_profile),
            MethodSpec.dps(pref, args.gamma, source="preference", k=args.k_profile)]
    for g in args.gammas:
        if g != args.gamma:
            out.append(MethodSpec("dps", contrast=MethodSpec.dps(pref, g).contrast, heads=pref, source="preference",
                                  k=args.k_profile, label=f"dps-preference-g{g:g}"))
    return out


def fit_style(setup, args, run: Run):
    """StyleVector: fit on discovery users, choose (layer, alpha) on discovery data, cached in the run folder."""
    layers = args.style_layers or sorted({setup.shape.n_layers // 3, 2 * setup.shape.n_layers // 3})
    users = {e.user_id for e in setup.split.evaluation}
    fit_examples = [e for e in setup.examples if e.user_id in users] + list(setup.split.discovery)
    vectors = fit_style_vectors(setup.model, fit_examples, layers, max_items=4, max_new_tokens=args.max_new_tokens,
                                remote=setup.remote)
    choice = select_style(setup.model, setup.split.discovery, vectors, args.style_alphas,
                          max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                          remote=setup.remote)
    write_json(run.path("stylevector_choice.json"), {"layer": choice.layer, "alpha": choice.alpha,
                                                     "grid_rougeL": {f"L{l}/a{a:g}": v
                                                                     for (l, a), v in choice.scores.items()}})
    return vectors[choice.layer], choice.alpha


def main(argv=None) -> Run:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = prepare(args)
    pcs_dir = Path(args.pcs_run) if args.pcs_run else Path(args.results) / slug(args.model) / slug(args.data) / "pcs_ranking"
    if not (pcs_dir / "top_heads.json").exists():
        raise SystemExit(f"no PCS ranking in {pcs_dir}: run `python -m studies.pcs_ranking` with the same options first")
    top = json.loads((pcs_dir / "top_heads.json").read_text())
    evaluation = setup.split.evaluation
    assert_not_used_for_ranking([e.example_id for e in evaluation], top["discovery_ids"])
    config = config_of(args, "dps_k", "gammas", "gamma", "max_new_tokens", "style_alphas", "judge")
    run = Run.open(args.results, args.model, args.data, "dps_decoding", config, fresh=args.fresh)
    style = fit_style(setup, args, run)
    specs = methods(setup, args, top, style)
    ck = run.checkpoint("generations")
    for spec in tqdm([s for s in specs if s.name not in ck], desc="methods", initial=len(ck), total=len(specs)):
        prompts = build_prompts(spec, evaluation, setup.tokenizer, max_prompt_tokens=args.max_prompt_tokens)
        texts = generate(setup.model, prompts, spec, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                         remote=setup.remote)
        ck.add(spec.name, heads=str(spec.heads) if spec.heads is not None else "", texts=texts)

    refs = [setup.prompts[e.example_id].target for e in evaluation]
    profiles = [[p.text for p in e.profile] for e in evaluation]
    rows = []
    for spec in specs:
        texts = ck.get(spec.name)["texts"]
        for e, text, score in zip(evaluation, texts, score_examples(texts, refs, profiles)):
            rows.append({"method": spec.name, "example_id": e.example_id, "user_id": e.user_id, "text": text,
                         **{m: score[m] for m in METRICS}})
    df = pd.DataFrame(rows)
    write_csv(run.path("per_example.csv"), df)

    summary = []
    for spec in specs:
        g = df[df.method == spec.name]
        rec = {"method": spec.name}
        for m in METRICS:
            lo, hi = stats.bootstrap_ci(g[m].to_numpy(), clusters=g.user_id.to_numpy(), n_boot=args.n_boot,
                                        seed=args.seed)
            rec[m], rec[f"{m}_ci"] = float(g[m].mean()), (lo, hi)
        summary.append(rec)
    tables.write_tables(summary, [("method", "method")] + [(k, k) for m in METRICS for k in (m, f"{m}_ci")],
                        run.root, "methods")
    means = {r["method"]: r["rougeL"] for r in summary}
    best = max([b for b in means if b in BASELINES], key=means.get)
    comps = []
    for spec in specs:
        if spec.kind != "dps":
            continue
        a = df[df.method == spec.name].sort_values("example_id")
        b = df[df.method == best].sort_values("example_id")
        for m in ("rougeL", "meteor", "style_similarity"):
            comps.append(stats.compare_paired(a[m].to_numpy(), b[m].to_numpy(), name=spec.name, baseline=best,
                                              outcome=m, users=a.user_id.to_numpy(), n_boot=args.n_boot,
                                              n_perm=args.n_perm, seed=args.seed))
    comps = stats.with_holm(comps)
    tables.write_tables([{**c.to_dict(), "ci": (c.ci_low, c.ci_high)} for c in comps],
                        [("name", "method"), ("baseline", "vs best baseline"), ("outcome", "metric"),
                         ("mean_a", "mean"), ("mean_b", "baseline mean"), ("mean_diff", "diff"), ("ci", "95% CI"),
                         ("d_z", "d_z"), ("p_wilcoxon", "p (Wilcoxon)"), ("p_permutation", "p (perm.)"),
                         ("p_holm", "p_Holm")], run.root, "dps_vs_best_baseline")
    plots.bars({r["method"]: (r["rougeL"], *r["rougeL_ci"]) for r in summary}, run.path("rougeL_by_method.png"),
               title=f"ROUGE-L by method ({args.data}, n={len(evaluation)})", ylabel="ROUGE-L")
    sweep = sorted(((s.contrast.gamma, means[s.name]) for s in specs if s.source == "preference"))
    plots.effect_curves([g for g, _ in sweep], {"dps-preference": tuple(
        pd.Series([v for _, v in sweep]).to_numpy() for _ in range(3))}, run.path("gamma_sweep.png"),
        title="DPS gamma sweep (ROUGE-L)", ylabel="ROUGE-L")

    pref = next(s for s in specs if s.name == "dps-preference")
    prompt0 = setup.prompts[evaluation[0].example_id].with_profile
    report = delta_logits_report(setup.model, prompt0, pref.heads, max_new_tokens=min(12, args.max_new_tokens),
                                 contrast=pref.contrast, remote=setup.remote)
    write_json(run.path("delta_logits_example.json"), [r.__dict__ for r in report])
    plot_delta_logits(report, str(run.path("delta_logits_example.png")))

    judged = None
    if args.judge != "none":
        backend = (OpenAIChatBackend(args.judge_model) if args.judge == "openai" else
                   CallableBackend(lambda ps: generate_texts(setup, ps), name=f"local:{args.model}"))
        a_texts, b_texts = ck.get("dps-preference")["texts"], ck.get(best)["texts"]
        items = [{"profile": "\n".join(p[:3]), "input": e.input, "output_a": x, "output_b": y,
                  "example_id": e.example_id, "user_id": e.user_id}
                 for e, p, x, y in zip(evaluation, profiles, a_texts, b_texts)]
        judged = judge_pairs(backend, items, method_a="dps-preference", method_b=best).to_dict()
        write_json(run.path("judge.json"), judged)
    run.manifest(seed=args.seed, model=args.model, data=args.data, split=setup.split_record(),
                 examples=setup.examples, extra={"n_eval": len(evaluation), "best_baseline": best,
                                                 "meteor_variant": METEOR_VARIANT, "pcs_run": str(pcs_dir),
                                                 "judge": args.judge})
    return run


def generate_texts(setup, prompts: list[str]) -> list[str]:
    """Local-model judge backend: greedy short answers to raw judge prompts."""
    from harness.decoding import decode

    chat = [setup.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                add_generation_prompt=True) for p in prompts]
    out = []
    for i in range(0, len(chat), 8):
        out += decode(setup.model, chat[i:i + 8], max_new_tokens=8, remote=setup.remote).texts
    return out


if __name__ == "__main__":
    main()
