"""`lpsctl demo` end to end at a tiny size: every stage runs, metrics.json and overlays appear, a rerun reuses."""

import json
from pathlib import Path

import pytest

from lpsctl.engine.checkpoint import load_checkpoint
from tests.cli_runner import run_lpsctl

TINY = ["--train-images", 4, "--val-images", 2, "--height", 64, "--width", 128, "--workers", 1]
TINY_MODEL = ["solver.max_iters=2", "solver.warmup_iters=1", "data.crop_height=64", "data.crop_width=128",
              "data.batch_size=2", "data.num_workers=0", "model.norm=torch", "solo.stacked_convs=1",
              "solo.head_channels=32", "solo.kernel_dim=32", "solo.mask_feature_channels=32"]  # fmt: skip


def test_demo_runs_every_stage_and_a_second_run_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "demo"
    arguments = ["demo", "--out", out, *TINY, *(item for o in TINY_MODEL for item in ("--set", o))]
    assert run_lpsctl(*arguments) == 0
    first = capsys.readouterr().out
    assert "Panoptic quality" in first and "overlays" in first and "demo finished in" in first
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"All", "Things", "Stuff", "per_class", "miou"} <= set(metrics)
    assert 0.0 <= metrics["All"]["pq"] <= 1.0
    assert (out / "val" / "panoptic.json").is_file() and (out / "val" / "metrics.json").is_file()
    assert len(list((out / "overlays").glob("*_overlay.png"))) == 2
    state = load_checkpoint(out / "train" / "last.pt")
    assert state["iteration"] == 2 and state["finished"]
    checkpoint_time = (out / "train" / "last.pt").stat().st_mtime

    assert run_lpsctl(*arguments) == 0
    assert "reused from an earlier demo: training, evaluation" in capsys.readouterr().out
    assert (out / "train" / "last.pt").stat().st_mtime == checkpoint_time

    # another model config (an older recipe, other --set values) trains again instead of reusing the checkpoint
    assert run_lpsctl(*arguments, "--set", "solo.head_channels=64") == 0
    assert "reused" not in capsys.readouterr().out
    assert load_checkpoint(out / "train" / "last.pt")["config"]["solo"]["head_channels"] == 64
    # so do other solver values (the iterations here); other fusion settings redo the evaluation only
    longer = (*arguments, "--set", "solo.head_channels=64", "--set", "solver.max_iters=3")
    assert run_lpsctl(*longer) == 0
    assert "reused" not in capsys.readouterr().out
    assert load_checkpoint(out / "train" / "last.pt")["iteration"] == 3
    assert run_lpsctl(*longer, "--set", "fusion.score_threshold=0.2") == 0
    assert "reused from an earlier demo: training\n" in capsys.readouterr().out
    assert json.loads((out / "val" / "metrics.json").read_text())["fusion"]["score_threshold"] == 0.2
    # --overwrite starts everything again
    assert run_lpsctl(*arguments, "--overwrite") == 0
    assert "reused" not in capsys.readouterr().out
    assert load_checkpoint(out / "train" / "last.pt")["config"]["solo"]["head_channels"] == 32
