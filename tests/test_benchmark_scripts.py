"""The prepared GPU script runs its whole code path on CPU (B0, 128×256), so that a lent GPU's few minutes are not
lost to a broken script: every case measured, none failed. The forward benchmarks finish on tiny inputs (a matmul
peak measured on a fixed 4096² product once took many minutes where bf16 has no fast kernel)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def test_gpu_suite_smoke_run_measures_every_case(tmp_path: Path):
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--device", "cpu", "--no-compile"]
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert not [row for row in rows if "error" in row], rows
    cases = {(row["head"], row["case"]) for row in rows}
    for head in ("solov2", "maskrcnn"):
        assert (head, "whole image: network + decoding + fusion") in cases
        assert sum(1 for h, case in cases if h == head and case.startswith("training step")) == 2
    assert all(row["ms"] > 0 for row in rows)


def run_script(name: str, *arguments: str) -> str:
    command = [sys.executable, str(REPO / "benchmarks" / name), "--backbones", "b0", "--height", "64", "--width", "128"]
    command += ["--repeats", "1", "--peak-budget", "0.5", "--no-anchor", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_inference_levers_smoke_run_prints_each_lever_and_both_peaks():
    out = run_script("inference_levers.py", "--levers", "eager", "channels-last")
    assert re.search(r"matmul peak fp32 \d+\.\d, bf16 \d+\.\d GFLOP/s", out), out
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows[1:]] == [
        "eager NCHW, norms as trained",
        "norms folded + channels-last (lpsctl's default)",
    ]
    assert all(float(row[6]) < 1e-3 for row in rows[1:]), rows  # max abs Δ to eager: rounding only


def test_inference_latency_smoke_run_prints_every_stage():
    out = run_script("inference_latency.py", "--device", "cpu")
    for stage in ("backbone + FPN", "SOLOv2 decoding + Matrix NMS", "panoptic fusion", "total"):
        assert re.search(rf"\| {re.escape(stage)} \| \d+\.\d{{3}} \|", out), out
    assert re.search(r"network forward: \d+ GFLOP, [\d.]+ GFLOP/s = \d+ % of the matmul peak", out), out


def test_fusion_ab_smoke_run_compares_with_a_revision():
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    command = [sys.executable, str(REPO / "benchmarks" / "fusion_ab.py"), "--against", "HEAD", "--rounds", "1"]
    command += ["--height", "64", "--width", "128", "--instances", "5", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("same output: True") == 2, result.stdout
    assert re.search(r"tensor calls per image now \(torch.profiler, top level\): \d+", result.stdout)
