#!/usr/bin/env bash
# The digits precise-BN study (docs/results/digits_precise_bn/README.md), as it was run:
# two shards in parallel, one intra-op thread each (two 1-thread processes on two cores do
# more steps per second than one 2-thread process). Run from the repository's root:
#   bash docs/results/digits_precise_bn/run_grid.sh [OUTPUT]      (default runs/digits_precise_bn)
# Three passes per shard, the comparison that matters first; every pass reuses the cells an
# earlier pass (or an interrupted run: rerun the same command) finished, and resumes an
# unfinished one from its checkpoints/last.ckpt. Then:
#   python -m dsrelu_lightning report --output OUTPUT
set -euo pipefail
output="${1:-runs/digits_precise_bn}"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$output"

shard() {
    local run=(python -m dsrelu_lightning benchmark --grid configs/benchmark_digits.yaml
               --output "$output" --shard "$1/2")
    "${run[@]}" --activations relu,dsrelu,dsrelu_authors_code,mish
    "${run[@]}" --activations relu,leaky_relu,sigmoid,tanh,mish,dsrelu,dsrelu_step,dsrelu_negative_slope_0,dsrelu_authors_code
    "${run[@]}" --activations relu,mish,dsrelu,dsrelu_authors_code --seeds 42,43,44
}

shard 0 > "$output/shard0.log" 2>&1 & first=$!
shard 1 > "$output/shard1.log" 2>&1 & second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
[ "$status" -eq 0 ] || echo "a shard failed (exit $status): see $output/shard*.log" >&2
exit "$status"
