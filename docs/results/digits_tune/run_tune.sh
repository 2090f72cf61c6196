#!/usr/bin/env bash
# The committed tuning study (docs/results/digits_tune/README.md): 36 trials each of DSReLU
# (lr, angles, steepness, schedule) and of ReLU and Mish (lr), digits on resnet18, two workers
# with one intra-op thread each, then the three best configurations benchmarked on test (seeds
# 42 and 43 x 5 folds). Run from the repository's root; rerun the same command to continue a
# stopped search (finished trials are kept, a killed worker's running trial is retried):
#   bash docs/results/digits_tune/run_tune.sh [OUTPUT]     (default runs/digits_tune)
# Then: python -m dsrelu_lightning tune --report OUTPUT
set -euo pipefail
output="${1:-runs/digits_tune}"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$output"
python -m dsrelu_lightning tune --config configs/digits.yaml \
    --space docs/results/digits_tune/space.yaml --baselines relu,mish --trials 36 \
    --output "$output" --workers 2 --confirm --seeds 42,43 \
    --model.backbone resnet18 >> "$output/tune.log" 2>&1
