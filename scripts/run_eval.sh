#!/usr/bin/env bash
# The full evaluation of issue 3: the four shared Chinese STS tasks (test splits), m3e-small and
# albert-tiny-chinese x {none, whitening, pca, jl} at 64/128/256 dimensions (the :256 cells are the
# headline grid; the others feed the Spearman-vs-dimension plot), protocol "paper" (reducers fitted on
# the evaluated split, here the test split only). Writes reports/eval/{results.json,report.md,report.html}
# (git-ignored); encodings are cached in .eval-cache/ so a re-run with other reducers does not re-encode.
#
# Heavy (minutes of CPU): run it under the shared lock, e.g.
#   flock /tmp/embedkit-heavy.lock bash scripts/run_eval.sh
# Extra arguments are passed to `embedkit eval` (e.g. --limit 500 for a quick look, or
# --poolings model,first-last-avg).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SHARED=${EMBEDKIT_SHARED:-../shared}
start=$(date +%s)
.venv/bin/embedkit eval \
  --data "$SHARED/data/sts-zh" \
  --tasks ATEC,BQ,LCQMC,STS-B \
  --models "$SHARED/models/m3e-small,$SHARED/models/albert-tiny-chinese" \
  --poolings model \
  --reducers none,whitening,pca,jl --dims 64,128,256 \
  --protocol paper --split test \
  -o reports/eval --cache-dir .eval-cache "$@"
echo "wall time: $(( $(date +%s) - start )) s" >&2
