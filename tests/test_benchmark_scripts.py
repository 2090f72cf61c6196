"""The performance benchmarks run and print what docs/performance.md quotes (tiny sizes).

Each runs in its own process: the scripts set torch's threads and the allocator
(``benchmarks/profiling.py``'s ``steady_malloc``) for the whole process. Speed itself is
not judged here.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

RATIO = r"\d+\.\d{3}x \(min \d+\.\d{3}, max \d+\.\d{3}, \d+ rounds"


def _run(script: str, *args: str) -> str:
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_op_benchmark_prints_ratios_and_saved_bytes_per_case() -> None:
    shape = ("--shape", "2", "8", "16", "16", "--repeats", "2", "--threads", "1")
    out = _run("bench_op.py", *shape, "--candidates", "dsrelu_fused", "relu")
    assert re.search(
        r"^allocator: (glibc malloc: .*\(steady_malloc\)|allocator unchanged)", out, re.M
    )
    ratios = re.findall(rf"DSReLU fwd\+bwd / leaky_relu: {RATIO}", out)
    assert len(ratios) == 4  # float32 and bf16, contiguous and channels_last
    assert len(re.findall(rf"dsrelu_fused / leaky_relu: {RATIO}", out)) == 4
    assert len(re.findall(rf"relu / leaky_relu: {RATIO}", out)) == 4
    assert out.count("(<= leaky_relu's + its 4 B slope: True)") == 4


@pytest.mark.slow
def test_step_benchmark_prints_ratio_control_stalls_and_page_faults() -> None:
    args = ("--network", "resnet18", "--repeats", "2", "--batch", "2", "--threads", "1")
    out = _run("bench_step.py", *args, "--control", "--fused", "--default-malloc")
    assert "allocator: glibc default" in out
    assert re.search(rf"DSReLU step / ReLU step: {RATIO}", out)
    assert re.search(rf"DSReLU \(opt-in fused\) step / ReLU step: {RATIO}", out)
    assert re.search(rf"control, ReLU step / ReLU step: {RATIO}", out)
    assert re.search(r"slowest timed step / median: relu \d+\.\d\dx, dsrelu \d+\.\d\dx", out)
    faults = r"page faults per timed step: relu \d+, dsrelu \d+, relu_control \d+, dsrelu_fused \d+"
    assert re.search(faults, out)
