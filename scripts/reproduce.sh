#!/usr/bin/env bash
# Reproduces the committed results/ (and paper/generated/), section by section, with the commands the README gave.
#
#   bash scripts/reproduce.sh SECTION [SECTION ...]     # or: all (in the order below)
#
# Sections (each command's comment says what it writes and, where measured, its wall time on 2 CPU cores):
#   seed0          SmolLM2-135M on conventions2012, split seed 0: ranking, ablation (both designs), DPS
#   gemma3         Gemma-3-270M on conventions2012, split seed 0: ranking, ablation (small null), DPS, zero/all design
#   zero-all       the zero/all design (prior code's) on split seeds 1-2 for both models, and its pooled estimates
#   seeds          split seeds 1-2 in the primary design for both models, then the overlap and pooled estimate
#   planted        the planted-preference families (known answers) on seed 0, side by side
#   planted-seed1  the planted families on a second split (seed 1)
#   debates        the debates2016 appendix (signal only)
#   paper          the cross-model views (both designs), the paper's macros, then the PDF
#
# Every study resumes from its checkpoints, so a section may be stopped and rerun. The conventions2012 and debates2016
# results were made with same-document profiles allowed (the default then), so their commands say `--profile-docs any`
# (after `--` for the pipeline); without it, today's default (`other`) is another config and results/ refuses it.
# The main design on sotu (cross-document profiles, in progress) has its own queue: bash scripts/sotu_runs.sh RESULTS.
# Wall times of the committed runs: benchmarks/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECTIONS=(seed0 gemma3 zero-all seeds planted planted-seed1 debates paper)
(($#)) || { sed -n '4,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $1 == all ]] && set -- "${SECTIONS[@]}"
for section in "$@"; do
  [[ " ${SECTIONS[*]} " == *" $section "* ]] || { echo "error: unknown section $section (${SECTIONS[*]}, all)" >&2; exit 2; }
done

for section in "$@"; do
  case $section in
  seed0)
    python -m studies.pipeline --preset full --data conventions2012 -- --profile-docs any    # results/<model>/conventions2012/seed0/: ranking, ablation (both designs), DPS; regenerates paper/generated/
    python -m studies.ablation_comparison --preset full --data conventions2012 --profile-docs any    # one stage: results/smollm2-135m/conventions2012/seed0/ablation_comparison/comparison_specific_gain_lost.md
    python -m studies.pipeline --preset full --data conventions2012 --plan -- --profile-docs any    # every stage's requests, forwards, tokens and time estimate; runs nothing
    ;;
  gemma3)
    python -m studies.pipeline --preset full --model gemma3-270m --data conventions2012 --designs mean/target --stages pcs ablation --small-null -- --profile-docs any   # Gemma-3's committed ranking and ablation (its signal: studies.signal)
    python -m studies.dps_decoding --model gemma3-270m --preset full --data conventions2012 --profile-docs any   # Gemma-3's real-user DPS (30.6 min)
    python -m studies.pcs_ranking --model gemma3-270m --preset full --data conventions2012 --profile-docs any --mode zero --positions all   # Gemma-3's zero/all ranking (8.1 min)
    python -m studies.ablation_comparison --model gemma3-270m --preset full --data conventions2012 --profile-docs any --mode zero --positions all --k-heads 10 --n-random 5 --n-random-other 1 --n-unmatched 2 --n-damage 0   # its ablation, smallest null (52.5 min)
    ;;
  zero-all)
    for s in 1 2; do python -m studies.pcs_ranking --model gemma3-270m --preset full --data conventions2012 --profile-docs any --mode zero --positions all --seed $s; python -m studies.ablation_comparison --model gemma3-270m --preset full --data conventions2012 --profile-docs any --mode zero --positions all --k-heads 10 --n-random 5 --n-random-other 1 --n-unmatched 2 --n-damage 0 --seed $s; done   # Gemma-3's zero/all on seeds 1-2 (63 and 57 min)
    python -m studies.seeds --model gemma3-270m --preset full --data conventions2012 --profile-docs any --seeds 0 1 2 --mode zero --positions all --k-heads 10   # its pooled estimate (all_seeds/seeds_summary-zero-all/)
    for s in 1 2; do python -m studies.pcs_ranking --preset full --data conventions2012 --profile-docs any --mode zero --positions all --seed $s; python -m studies.ablation_comparison --preset full --data conventions2012 --profile-docs any --mode zero --positions all --k-heads 10 --n-random 5 --n-random-other 1 --n-unmatched 2 --n-damage 0 --seed $s; done   # SmolLM2's zero/all on seeds 1-2, Gemma-3's null (56 and 63 min)
    python -m studies.seeds --preset full --data conventions2012 --profile-docs any --seeds 0 1 2 --mode zero --positions all --k-heads 10   # SmolLM2's pooled zero/all estimate
    ;;
  seeds)
    for m in smollm2-135m gemma3-270m; do for s in 1 2; do for st in signal pcs_ranking; do python -m studies.$st --model $m --preset full --data conventions2012 --profile-docs any --seed $s; done; done; done   # seeds 1-2
    python -m studies.ablation_comparison --preset full --data conventions2012 --profile-docs any --seed 1                     # SmolLM2's seed-1 ablation, full null (106 min)
    python -m studies.ablation_comparison --preset full --data conventions2012 --profile-docs any --seed 2 --n-random 50 --n-random-other 10 --n-unmatched 10 --n-damage 100   # SmolLM2's seed 2 (half the full null, 65 min)
    for s in 1 2; do python -m studies.ablation_comparison --model gemma3-270m --preset full --data conventions2012 --profile-docs any --seed $s --n-random 20 --n-random-other 5 --n-unmatched 4 --n-damage 40; done   # Gemma-3's seed 1-2 ablations (small null)
    for m in smollm2-135m gemma3-270m; do python -m studies.seeds --model $m --preset full --data conventions2012 --profile-docs any --seeds 0 1 2; done   # overlap across seeds and the pooled estimate (reads the runs above)
    ;;
  planted)
    for f in signoff lexicon spelling case; do python -m studies.pipeline --preset quick --results results --stages pcs ablation --no-paper --data planted:conventions2012:$f -- --profile-docs any --n 48 --max-target-tokens 64; python -m studies.dps_decoding --preset quick --n 48 --max-target-tokens 64 --max-new-tokens 64 --data planted:conventions2012:$f --profile-docs any --results results; done   # SmolLM2's planted families (add --model gemma3-270m after pipeline and after dps_decoding for Gemma-3's)
    python -m studies.known_answer --preset quick --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results   # the planted families side by side (--model gemma3-270m for Gemma-3's)
    ;;
  planted-seed1)
    for m in smollm2-135m gemma3-270m; do python -m studies.pipeline --preset quick --model $m --results results --stages pcs ablation --no-paper --data planted:conventions2012:signoff --seeds 1 -- --profile-docs any --n 48 --max-target-tokens 64; python -m studies.known_answer --preset quick --model $m --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results --seed 1 --planted signoff; done   # the sign-off on a second split (23 min SmolLM2, 53 min Gemma-3)
    for m in smollm2-135m gemma3-270m; do python -m studies.pipeline --preset quick --model $m --results results --stages pcs ablation --no-paper --data planted:conventions2012:case --seeds 1 -- --profile-docs any --n 48 --max-target-tokens 64; python -m studies.known_answer --preset quick --model $m --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results --seed 1 --planted signoff case --fresh; done   # case on the second split (23 min SmolLM2, 52 min Gemma-3)
    python -m studies.pipeline --preset quick --results results --stages pcs ablation --no-paper --data planted:conventions2012:spelling --seeds 1 -- --profile-docs any --n 48 --max-target-tokens 64; python -m studies.known_answer --preset quick --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results --seed 1 --planted signoff case spelling --fresh   # SmolLM2's spelling on the second split (26 min)
    python -m studies.dps_decoding --preset quick --n 48 --max-target-tokens 64 --max-new-tokens 64 --data planted:conventions2012:case --profile-docs any --results results --seed 1   # SmolLM2's DPS on the second split's lowercase users (21.5 min; then known_answer again as above)
    for m in smollm2-135m gemma3-270m; do python -m studies.pipeline --preset quick --model $m --results results --stages pcs ablation --no-paper --data planted:conventions2012:lexicon --seeds 1 -- --profile-docs any --n 48 --max-target-tokens 64; done   # lexicon on the second split (28 min SmolLM2, 62 min Gemma-3)
    python -m studies.pipeline --preset quick --model gemma3-270m --results results --stages pcs ablation --no-paper --data planted:conventions2012:spelling --seeds 1 -- --profile-docs any --n 48 --max-target-tokens 64   # Gemma-3's spelling on the second split (75 min)
    python -m studies.dps_decoding --preset quick --n 48 --max-target-tokens 64 --max-new-tokens 64 --data planted:conventions2012:signoff --profile-docs any --results results --seed 1   # SmolLM2's DPS on the second split's sign-off users (22.6 min)
    python -m studies.known_answer --preset quick --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results --seed 1 --planted signoff lexicon spelling case --fresh; python -m studies.known_answer --preset quick --model gemma3-270m --n 48 --max-target-tokens 64 --data conventions2012 --profile-docs any --results results --seed 1 --planted signoff lexicon spelling case --fresh   # the second split's families side by side
    ;;
  debates)
    python -m studies.signal --preset full --data debates2016 --profile-docs any --no-by-user                                  # the debates appendix
    ;;
  paper)
    python -m studies.cross_model && python -m studies.cross_model --ranking-folder pcs_ranking-zero-all && python -m studies.paper_tables   # cross-model views (both designs), then the paper's macros
    python -m studies.paper_tables --claims   # every claim with the numbers it rests on, and whether it holds
    (cd paper && latexmk -pdf main.tex)   # Debian: apt-get install latexmk texlive-latex-recommended texlive-fonts-recommended lmodern
    ;;
  esac
done
