"""The prepared GPU script runs its whole code path on CPU (B0, 128×256), so that a lent GPU's few minutes are not
lost to a broken script: every case measured, none failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
