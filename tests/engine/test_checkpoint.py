import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from lpsctl.config import load_config, to_dict
from lpsctl.engine.checkpoint import checkpoint_config, load_checkpoint, load_model_state, save_checkpoint
from lpsctl.engine.rundir import RunDir, check_resumable, config_mismatch
from lpsctl.engine.state import capture_rng, restore_rng
from lpsctl.errors import CheckpointError, LpsctlError


def _state(model: nn.Module) -> dict:
    return {"model": model.state_dict(), "config": to_dict(load_config()), "iteration": 3, "rng": capture_rng()}


def test_round_trip_with_weights_only(tmp_path: Path):
    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path / "last.pt", _state(model))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    state = load_checkpoint(tmp_path / "last.pt")
    other = nn.Linear(3, 2)
    load_model_state(other, state["model"], "last.pt")
    assert torch.equal(other.weight, model.weight)
    assert checkpoint_config(state, "last.pt") == load_config()


def test_rng_state_restores_the_same_draws(tmp_path: Path):
    save_checkpoint(tmp_path / "c.pt", _state(nn.Linear(1, 1)))
    expected = torch.rand(3)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(3), expected)


def test_bad_checkpoints_are_clear_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(garbage)
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model": Payload(), "config": {}}, evil)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as caught:
        load_checkpoint(evil)
    assert "Python objects" in str(caught.value) and "weights_only" not in str(caught.value)  # no unsafe advice
    evil.write_bytes(pickle.dumps({"model": Payload(), "config": {}}))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(evil)
    future = tmp_path / "future.pt"
    save_checkpoint(future, _state(nn.Linear(1, 1)) | {"format_version": 99})
    with pytest.raises(CheckpointError, match=r"checkpoint format 99, newer than this lpsctl reads \(1\): upgrade"):
        load_checkpoint(future)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not an lpsctl checkpoint"):
        load_checkpoint(plain)


def test_mismatched_weights_name_the_keys():
    with pytest.raises(
        CheckpointError,
        match=r"missing: 2.bias; shape mismatch: 0.bias \(4,\) vs \(5,\), 0.weight \(4, 3\) vs \(5, 3\)",
    ):
        load_model_state(
            nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1)),
            nn.Sequential(nn.Linear(3, 4)).state_dict() | {"2.weight": torch.zeros(1, 5)},
            "x.pt",
        )


def test_run_folder_is_never_overwritten_silently(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    config = load_config()
    assert check_resumable(run, config, resume=False, overwrite=False) is None
    assert run.config.exists()
    with pytest.raises(LpsctlError, match="already holds a run.*--resume.*--overwrite"):
        check_resumable(run, config, resume=False, overwrite=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        check_resumable(run, config, resume=True, overwrite=False)
    save_checkpoint(run.last, _state(nn.Linear(1, 1)))
    assert check_resumable(run, config, resume=True, overwrite=False)["iteration"] == 3
    other = load_config(None, ["model.backbone=efficientnet-b0"])
    with pytest.raises(CheckpointError, match="model.backbone: 'efficientnet-b5' in the checkpoint"):
        check_resumable(run, other, resume=True, overwrite=False)
    assert check_resumable(run, config, resume=False, overwrite=True) is None
    assert not run.last.exists()


def test_mismatch_ignores_where_weights_came_from():
    a = to_dict(load_config())
    b = to_dict(load_config(None, ["model.backbone_weights=x.pth", "model.norm=torch", "solver.lr=1"]))
    assert config_mismatch(a, b) == []
    c = to_dict(load_config(None, ["solo.grids=[12]"]))
    assert config_mismatch(a, c) == ["solo.grids: [40, 36, 24, 16, 12] in the checkpoint, [12] now"]


def test_metrics_go_to_jsonl_and_to_tensorboard_when_installed(tmp_path: Path):
    run = RunDir(tmp_path)
    run.log_metrics({"iteration": 1, "loss": 2.5, "val/pq": float("nan")})
    assert run.metrics.read_text() == '{"iteration": 1, "loss": 2.5, "val/pq": null}\n'
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return  # optional: without it there are only the JSON lines
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_a_lock_from_another_host_counts_until_its_holder_stops_touching_it(tmp_path: Path, monkeypatch):
    """A requeued cluster job lands on another node: the lock a killed run left there is stale once it has not been
    touched for LOCK_STALE_S; while its holder lives, a heartbeat thread keeps touching it."""
    import os
    import time

    from lpsctl.engine import rundir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    lock = run.path / rundir.LOCK_NAME
    lock.write_text("4242 node-elsewhere\n")
    with pytest.raises(LpsctlError, match="in use by process 4242 on node-elsewhere"):
        run.lock()
    old = time.time() - rundir.LOCK_STALE_S - 1
    os.utime(lock, (old, old))
    run.lock()  # taken over
    assert lock.read_text().split()[0] == str(os.getpid())
    run.close()
    monkeypatch.setattr(rundir, "LOCK_HEARTBEAT_S", 0.05)
    run.lock()
    os.utime(lock, (old, old))
    time.sleep(0.5)
    assert time.time() - lock.stat().st_mtime < 1  # the holder's heartbeat touched it again
    run.close()
    assert not lock.exists()
