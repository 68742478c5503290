"""The CLI's promise for bad input: one `error:` line that names the problem (no traceback), exit code 2; `data check`
reports problems with exit code 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lpsctl.data.cityscapes import panoptic_folder, panoptic_json
from lpsctl.imagefile import read_panoptic_png
from lpsctl.labels import id_to_rgb
from tests.cli_runner import run_lpsctl
from tests.tiny_models import write_checkpoint


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `lpsctl ARGS` run in this process."""
    code = run_lpsctl(*args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    """Exit code 2 and exactly one `error:` line on stderr holding every fragment; no traceback anywhere."""
    code, out, err = result
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in err + out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    garbage = folder / "garbage.pt"
    garbage.write_bytes(b"\x80\x02 not a checkpoint " * 64)
    return {
        "eps": write_checkpoint(folder / "eps.pt", "eps"),
        "solo": write_checkpoint(folder / "solo.pt", "solo", puppet=False),
        "garbage": garbage,
    }


def test_missing_dataset_root(checkpoints, tmp_path: Path, capsys):
    missing = tmp_path / "nowhere"
    args = ("--checkpoint", checkpoints["eps"], "--root", missing, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, "fuse", *args), "dataset root not found", str(missing))
    assert_user_error(run(capsys, "data", "prepare", "--root", missing), str(missing))
    assert_user_error(run(capsys, "eval", "--pred", tmp_path, "--root", missing), "dataset root not found")
    code, out, _ = run(capsys, "data", "check", "--root", missing)
    assert code == 1 and "dataset root not found" in out


def test_missing_and_garbage_checkpoints(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    missing = tmp_path / "missing.pt"
    assert_user_error(
        run(capsys, "fuse", "--checkpoint", missing, "--root", prepared_root, "--out", tmp_path / "pred"),
        "checkpoint not found",
        str(missing),
    )
    assert_user_error(
        run(capsys, "export-masks", "--checkpoint", checkpoints["garbage"], "--root", prepared_root, "--out", "m.json"),
        "cannot read checkpoint",
        "garbage.pt",
    )
    assert not (tmp_path / "pred").exists()


def test_solo_checkpoint_given_to_fuse(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    args = ("--checkpoint", checkpoints["solo"], "--root", prepared_root, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, "fuse", *args), "instance-only", "train eps", "export-masks")
    assert_user_error(
        run(capsys, "visualize", prepared_root / "leftImg8bit", "--checkpoint", checkpoints["solo"]), "instance-only"
    )


def test_bad_config_overrides_and_files(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    assert_user_error(run(capsys, "config", "show", "--set", "solver.nope=1"), "unknown key 'nope'", "valid keys", "lr")
    assert_user_error(run(capsys, "config", "show", "--set", "solver.lr=fast"), "solver.lr", "expected float", "fast")
    assert_user_error(run(capsys, "config", "show", "--set", "solver.lr"), "expected section.key=value")
    assert_user_error(run(capsys, "config", "show", "--config", tmp_path / "missing.yaml"), "config file not found")
    (tmp_path / "broken.yaml").write_text("solver: [unclosed\n")
    assert_user_error(run(capsys, "config", "show", "--config", tmp_path / "broken.yaml"), "not valid YAML")
    fuse = ("fuse", "--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", tmp_path / "pred")
    assert_user_error(
        run(capsys, *fuse, "--set", "model.backbone=efficientnet-b1"),
        "fusion.*, inference.*, data.eval_scale, data.eval_max_size and the decoding",
    )
    assert_user_error(run(capsys, *fuse, "--set", "fusion.nope=1"), "unknown key 'nope'", "score_threshold")
    assert_user_error(run(capsys, *fuse, "--set", "fusion.stuff_area=big"), "fusion.stuff_area", "expected int")


def test_corrupt_png_in_the_dataset(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    root = tmp_path / "cityscapes"
    shutil.copytree(prepared_root, root)
    image = sorted((root / "leftImg8bit" / "val").glob("*/*.png"))[-1]
    image.write_bytes(image.read_bytes()[:200])  # truncated: the header is fine, the pixels are gone
    args = ("--checkpoint", checkpoints["eps"], "--root", root, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, "fuse", *args), "corrupt or truncated", image.name)
    assert not (tmp_path / "pred" / "panoptic.json").exists()  # no half result that looks complete
    image.write_bytes(b"not a png")
    code, out, err = run(capsys, "data", "check", "--root", root, "--split", "val")
    assert code == 1 and "corrupt or truncated" in out and image.name in out and "Traceback" not in err
    assert "1 problem(s)" in out and "1 unreadable file" in out  # the summary counts problems by kind


def test_a_corrupt_png_met_in_a_loader_worker_is_one_line(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    """With DataLoader workers the error comes back from a worker process (PyTorch re-raises it with the worker's
    traceback inside the message): still one line."""
    root = tmp_path / "cityscapes"
    shutil.copytree(prepared_root, root)
    image = sorted((root / "leftImg8bit" / "train").glob("*/*.png"))[0]
    image.write_bytes(image.read_bytes()[:200])
    overrides = [f"data.root={root}", "data.num_workers=1", "data.crop_height=64", "data.crop_width=128"]
    overrides += ["model.norm=torch", "solver.max_iters=30", "solver.eval_period=0", "data.batch_size=2"]
    arguments = ["train", "solo", "--out", tmp_path / "run", "--no-validate"]
    arguments += [item for override in overrides for item in ("--set", override)]
    assert_user_error(run(capsys, *arguments), "corrupt or truncated", image.name)


def test_output_paths_the_system_refuses_are_one_line(tmp_path: Path, capsys):
    """An OS error (here: --root is a file, so no folder can be made in it) names the problem and the path."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "data", "synth", "--root", blocker / "cityscapes", "--train", 1, "--val", 1)
    assert code == 2 and err.startswith("error: ") and str(blocker) in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_unknown_label_in_polygons(synthetic_root: Path, tmp_path: Path, capsys):
    root = tmp_path / "cityscapes"
    shutil.copytree(synthetic_root, root)
    polygons = sorted((root / "gtFine" / "val").glob("*/*_polygons.json"))[0]
    content = json.loads(polygons.read_text())
    content["objects"].append({"label": "spaceship", "polygon": [[1, 1], [20, 1], [20, 20]]})
    polygons.write_text(json.dumps(content))
    assert_user_error(
        run(capsys, "data", "prepare", "--root", root, "--workers", 1), "unknown label 'spaceship'", polygons.name
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    args = ("--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, "fuse", *args, "--device", "cuda"), "CUDA is not available", "--device cpu")
    assert_user_error(
        run(capsys, "export-masks", *args[:4], "--out", tmp_path / "m.json", "--device", "cuda:1"), "CUDA"
    )


def test_unknown_device_name(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    args = ("--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, "fuse", *args, "--device", "gpu0"), "not a device name")


def test_visualize_without_images(checkpoints, tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert_user_error(
        run(capsys, "visualize", tmp_path / "empty", "--checkpoint", checkpoints["eps"]), "no images found"
    )
    assert_user_error(
        run(capsys, "visualize", str(tmp_path / "*.jpg"), "--checkpoint", checkpoints["eps"]), "no images found"
    )
    assert_user_error(
        run(capsys, "visualize", tmp_path / "missing.png", "--checkpoint", checkpoints["eps"]), "missing.png"
    )


def test_eval_with_nothing_to_evaluate(prepared_root: Path, tmp_path: Path, capsys):
    assert_user_error(run(capsys, "eval", "--root", prepared_root), "nothing to evaluate", "--pred", "--masks")
    assert_user_error(run(capsys, "eval", "--pred", tmp_path, "--root", prepared_root), "not a prediction folder")
    assert_user_error(run(capsys, "eval", "--masks", tmp_path / "m.json", "--root", prepared_root), "not found")


def test_bad_masks_files(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    fuse = ("fuse", "--checkpoint", checkpoints["eps"], "--root", prepared_root, "--out", tmp_path / "pred")
    assert_user_error(run(capsys, *fuse, "--masks", tmp_path / "missing.json"), "masks file not found")
    (tmp_path / "broken.json").write_text("[{")
    assert_user_error(run(capsys, *fuse, "--masks", tmp_path / "broken.json"), "not valid JSON")
    (tmp_path / "plain.json").write_text(json.dumps([{"image_id": 1, "category_id": 26, "score": 1.0}]))
    assert_user_error(run(capsys, *fuse, "--masks", tmp_path / "plain.json"), "not an lpsctl masks file")


def test_existing_outputs_are_kept(prepared_root: Path, checkpoints, tmp_path: Path, capsys):
    (tmp_path / "pred").write_text("a file, not a folder")
    args = ("--checkpoint", checkpoints["eps"], "--root", prepared_root)
    assert_user_error(run(capsys, "fuse", *args, "--out", tmp_path / "pred"), "is a file")
    assert_user_error(run(capsys, "export-masks", *args, "--out", tmp_path), "is a folder")


def test_no_traceback_reaches_the_terminal(checkpoints, prepared_root: Path, tmp_path: Path):
    """The installed entry point (`python -m lpsctl`), not just `main`: stderr is the one error line."""
    command = [sys.executable, "-m", "lpsctl", "fuse", "--checkpoint", str(checkpoints["garbage"])]
    command += ["--root", str(prepared_root), "--out", str(tmp_path / "pred")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ | {"COLUMNS": "60"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: cannot read checkpoint"), result.stderr
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("broken", ["wrong size", "id not in the JSON"])
def test_eval_reference_on_bad_predictions_is_one_line(prepared_root: Path, tmp_path: Path, broken: str):
    """The GT itself as a prediction folder, one PNG broken: `eval --reference` (cityscapesscripts' evaluator with its
    worker processes) prints one error line and nothing else, at the file-descriptor level."""
    pred = tmp_path / "pred"
    shutil.copytree(panoptic_folder(prepared_root, "val"), pred / "panoptic")
    shutil.copy(panoptic_json(prepared_root, "val"), pred / "panoptic.json")
    png = sorted((pred / "panoptic").glob("*.png"))[0]
    ids = read_panoptic_png(png)
    if broken == "wrong size":
        ids = ids[: ids.shape[0] // 2]
    else:
        ids[:4, :4] = 4242
    Image.fromarray(id_to_rgb(ids)).save(png)
    command = [sys.executable, "-m", "lpsctl", "eval", "--pred", str(pred), "--root", str(prepared_root), "--reference"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ | {"COLUMNS": "400"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert png.name in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert not (pred / "metrics.json").exists()


@pytest.mark.parametrize("conflict", ["holds a run", "resume and overwrite", "nothing to resume", "out is a file"])
def test_run_folder_conflicts_are_refused_before_torch_is_imported(prepared_root: Path, tmp_path: Path, conflict):
    """`train`'s flag and run-folder mistakes cost a fraction of a second, not a model build: the process that
    refuses them never imports torch (checked in that process)."""
    out = tmp_path / "run"
    flags = {"holds a run": [], "resume and overwrite": ["--resume", "--overwrite"], "nothing to resume": ["--resume"]}
    if conflict == "out is a file":
        out.write_text("not a folder")
    else:
        out.mkdir()
        if conflict != "nothing to resume":
            (out / "config.yaml").write_text("model: {}\n")
    argv = ["train", "solo", "--out", str(out), "--set", f"data.root={prepared_root}", *flags.get(conflict, [])]
    probe = (
        "import sys; from lpsctl.cli.app import main\n"
        f"try:\n    main({argv!r})\n"
        "except SystemExit as stop:\n    print('torch' in sys.modules, stop.code)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "2"], result.stdout + result.stderr
    expected = {"holds a run": "already holds a run", "resume and overwrite": "exclude each other"}
    expected |= {"nothing to resume": "nothing to resume", "out is a file": "is a file, not a folder"}
    assert result.stderr.startswith("error: ") and expected[conflict] in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
