#!/usr/bin/env bash
# The claims study (docs/results/digits_claims/README.md), as it was run: two
# shards in parallel, one intra-op thread each. Run from the repository's root:
#   bash docs/results/digits_claims/run_grid.sh [OUTPUT]     (default runs/digits_claims)
# One pass per seed, the first seed first: each pass reuses the cells an earlier pass (or an
# interrupted run: rerun the same command) finished, and resumes an unfinished one from its
# checkpoints/last.ckpt; stop it after any pass and the report covers the seeds done. Then:
#   python -m dsrelu_lightning report --output OUTPUT
set -euo pipefail
output="${1:-runs/digits_claims}"
seeds="${SEEDS:-42 43}"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$output"

shard() {
    local done_seeds=""
    for seed in $seeds; do
        done_seeds="${done_seeds:+$done_seeds,}$seed"
        python -m dsrelu_lightning benchmark --grid docs/results/digits_claims/grid.yaml \
            --output "$output" --shard "$1/2" --seeds "$done_seeds" --keep_checkpoints none
    done
}

shard 0 >> "$output/shard0.log" 2>&1 & first=$!
shard 1 >> "$output/shard1.log" 2>&1 & second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
[ "$status" -eq 0 ] || echo "a shard failed (exit $status): see $output/shard*.log" >&2
exit "$status"
