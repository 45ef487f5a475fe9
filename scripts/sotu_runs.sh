#!/usr/bin/env bash
# The cross-document main design on sotu (issue 37), in the order its answers are needed, each step resumable:
# rerunning the same command skips finished work (checkpoints), so the queue may span sessions.
#
#   bash scripts/sotu_runs.sh RESULTS [STEP ...]
#
# Steps (default: all, in this order):
#   signal    per model and split seed: the own / other-user / no-profile gains with the nearest donor (the primary
#             design) and the same-document variant (--same-doc), then with a random donor (-donor-random/)
#   pcs       the full preset's head ranking on the primary design
#   ablation  the ablation comparison (primary design; its null as the full preset declares it)
#   dps       DPS decoding on the primary design
#   planted   the positive control at the main design's configuration: planted families on sotu
# Run it from a clean commit (a worktree), so every manifest records that commit; copy RESULTS into results/ after.
set -euo pipefail
RESULTS=${1:?usage: bash scripts/sotu_runs.sh RESULTS [STEP ...]}
shift
if (($#)); then STEPS=("$@"); else STEPS=(signal pcs ablation dps planted); fi
MODELS=(${MODELS:-smollm2-135m gemma3-270m})
SEEDS=(${SEEDS:-0 1 2})
PY=${PYTHON:-python3}

for step in "${STEPS[@]}"; do
  for model in "${MODELS[@]}"; do
    for seed in "${SEEDS[@]}"; do
      common=(--preset full --model "$model" --data sotu --seed "$seed" --results "$RESULTS")
      case $step in
        signal)
          $PY -m studies.signal "${common[@]}" --same-doc
          $PY -m studies.signal "${common[@]}" --donor random ;;
        pcs|ablation|dps)
          $PY -m studies.pipeline --preset full --model "$model" --data sotu --seeds "$seed" --stages "$step" \
            --designs mean/target --results "$RESULTS" --no-paper ;;
        planted)
          families=(signoff lexicon spelling case)
          [[ $model == gemma3-270m ]] && families=(signoff case)
          for family in "${families[@]}"; do
            $PY -m studies.pipeline --preset full --model "$model" --data "planted:sotu:$family" --seeds "$seed" \
              --stages pcs ablation --designs mean/target --results "$RESULTS" --no-paper
          done ;;
        *) echo "error: unknown step $step (signal, pcs, ablation, dps, planted)" >&2; exit 2 ;;
      esac
    done
  done
done
