#!/bin/bash
source "${VENV:-/work/venv}/bin/activate"
cd "$(dirname "$0")/../../.."
export PYTHONPATH=.
for i in 1 2 3; do
  python benchmarks/bench_op.py --repeats 60 > docs/results/performance_issue23/op_$i.log 2>&1
  python benchmarks/bench_step.py --repeats 30 --control > docs/results/performance_issue23/step_$i.log 2>&1
done
python benchmarks/bench_op.py --repeats 60 --threads 1 > docs/results/performance_issue23/op_t1.log 2>&1
python benchmarks/bench_step.py --repeats 30 --control --default-malloc > docs/results/performance_issue23/step_default_malloc.log 2>&1
python benchmarks/bench_op.py --repeats 60 --default-malloc > docs/results/performance_issue23/op_default_malloc.log 2>&1
rm -rf /tmp/fresh_inductor_cache
TORCHINDUCTOR_CACHE_DIR=/tmp/fresh_inductor_cache python -c "
import time; t=time.perf_counter(); import torch
from dsrelu_lightning.nn.dsrelu_kernel import warm_up
a=time.perf_counter(); warm_up('cpu', torch.float32); b=time.perf_counter(); warm_up('cpu', torch.bfloat16); c=time.perf_counter()
print(f'empty inductor cache: float32 warm-up {b-a:.2f} s, bfloat16 {c-b:.2f} s')" > docs/results/performance_issue23/warmup_cold.log 2>&1
python -c "
import time, torch
from dsrelu_lightning.nn.dsrelu_kernel import warm_up
a=time.perf_counter(); warm_up('cpu', torch.float32); b=time.perf_counter(); warm_up('cpu', torch.bfloat16); c=time.perf_counter()
print(f'warm inductor cache: float32 warm-up {b-a:.2f} s, bfloat16 {c-b:.2f} s')" > docs/results/performance_issue23/warmup_warm.log 2>&1
echo "run.sh: done"
