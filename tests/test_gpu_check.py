"""bench/gpu_check.py, the script run on a lent GPU, proved on the CPU: it runs, judges parity, prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402


def test_tolerance_ratio_and_snr() -> None:
    expected = torch.tensor([1.0, -2.0, 0.0])
    # atol 1e-3, rtol 0.1: tolerances 0.101, 0.201, 0.001
    actual = torch.tensor([1.0505, -2.0, 0.0005])
    assert gpu_check.tolerance_ratio(actual, expected, 1e-3, 0.1) == pytest.approx(0.5, rel=1e-3)
    assert gpu_check.tolerance_ratio(expected, expected, 1e-3, 0.1) == 0.0
    assert gpu_check.Check("x", 1.0).ok and not gpu_check.Check("x", 1.01).ok
    ref = torch.ones(100)
    assert gpu_check.snr_db(ref * 1.1, ref) == pytest.approx(20.0)


def test_runs_on_the_cpu_and_passes_parity(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--steps", "3",
                           "--codes", "8", "--ref-seconds", "3"],
                          capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.rstrip().endswith("parity on cpu: PASS")
    parity = out.split("1. parity")[1].split("2. reduced")[0]
    for stage in ("style", "prompt_condition", "latent", "vc_target (mel)", "bigvgan_out", "GPT codes (exact)",
                  "output wav (int16)", "w2v-BERT features"):
        line = next(row for row in parity.splitlines() if row.strip().startswith(stage))
        assert " pass " in line, line
        ratio = float(line.strip()[len(stage):].split()[0])
        assert 0.0 <= ratio <= 1.0
    timings = out.split("timings")[1]
    for stage in ("w2v-BERT (speaker + emotion)", "GPT decode", "s2mel CFM (diffusion)", "BigVGAN", "total"):
        row = next(r for r in timings.splitlines() if r.strip().startswith(stage))
        assert all(float(x) > 0 for x in row.split()[-2:]), row
