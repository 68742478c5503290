"""The commands with EfficientPS's Mask R-CNN head chosen by the config: train eps / train solo (losses through the
criterion, validation), export-masks, fuse (output that the official evaluator reads), eval, visualize, predict;
the head is recorded in the checkpoint and a SOLOv2 ↔ Mask R-CNN mix-up is a one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

from lpsctl.config import load_config
from lpsctl.data.cityscapes import panoptic_folder, panoptic_json
from lpsctl.engine.checkpoint import load_checkpoint, save_checkpoint
from lpsctl.labels import THING_LABEL_IDS
from tests.cli_runner import run_lpsctl as run
from tests.engine.train_helpers import SYNTHETIC_EPS, cli_arguments, loss_lines, one_thread, tiny_overrides

MASKRCNN = {
    "model__instance_head": "maskrcnn",
    "model__fpn_channels": 32,
    "semantic__lsfe_channels": 16,
    "maskrcnn__anchor_sizes": "[8,16,32,64]",
    "maskrcnn__representation": 64,
    "maskrcnn__mask_channels": 16,
    "maskrcnn__mask_convs": 1,
    "maskrcnn__roi_batch_per_image": 32,
    "solver__eval_period": 2,
}
MASKRCNN_TERMS = {"loss_rpn_objectness", "loss_rpn_box", "loss_rcnn_class", "loss_rcnn_box", "loss_rcnn_mask"}
#: an untrained head scores every class ~1/9: without thresholds its detections reach fusion
NO_THRESHOLDS = ("-s", "maskrcnn.score_threshold=0", "-s", "fusion.score_threshold=0")


@pytest.fixture(scope="module")
def runs(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("maskrcnn_runs")
    with one_thread():
        for mode in ("eps", "solo"):
            arguments = cli_arguments(mode, folder / mode, tiny_overrides(prepared_root, **MASKRCNN))
            assert run(*arguments) == 0
    return {mode: folder / mode / "last.pt" for mode in ("eps", "solo")}


def test_training_records_the_head_and_its_loss_terms(runs: dict[str, Path]):
    for mode, semantic in (("eps", {"loss_semantic_ce"}), ("solo", set())):
        state = load_checkpoint(runs[mode])
        assert state["config"]["model"]["instance_head"] == "maskrcnn"
        assert any(key.startswith("instance_head.rpn.") for key in state["model"])
        lines = loss_lines(runs[mode].parent)
        assert [line["iteration"] for line in lines] == [1, 2, 3]
        assert {key for key in lines[0] if key.startswith("loss_")} == MASKRCNN_TERMS | semantic
        metrics = [json.loads(line) for line in (runs[mode].parent / "metrics.jsonl").read_text().splitlines()]
        headline = "val/pq" if mode == "eps" else "val/ap"
        assert [line["iteration"] for line in metrics if headline in line] == [2, 3]


def test_export_fuse_eval_and_visualize_take_the_mask_rcnn_head(
    runs: dict[str, Path], prepared_root: Path, tmp_path: Path
):
    masks = tmp_path / "masks.json"
    assert (
        run("export-masks", "--checkpoint", runs["solo"], "--root", prepared_root, "--out", masks, *NO_THRESHOLDS[:2])
        == 0
    )
    exported = json.loads(masks.read_text())
    assert exported and {result["category_id"] for result in exported} <= set(THING_LABEL_IDS)
    pred = tmp_path / "pred"
    assert run("fuse", "--checkpoint", runs["eps"], "--root", prepared_root, "--out", pred, *NO_THRESHOLDS) == 0
    segments = [s for a in json.loads((pred / "panoptic.json").read_text())["annotations"] for s in a["segments_info"]]
    assert any(segment["category_id"] in THING_LABEL_IDS for segment in segments)  # its instances were fused
    official = evaluatePanoptic(
        str(panoptic_json(prepared_root, "val")),
        str(panoptic_folder(prepared_root, "val")),
        str(pred / "panoptic.json"),
        str(pred / "panoptic"),
        str(tmp_path / "official.json"),
    )
    assert run("eval", "--pred", pred, "--root", prepared_root, "--workers", 1) == 0
    ours = json.loads((pred / "metrics.json").read_text())
    for group in ("All", "Things", "Stuff"):
        for metric in ("pq", "sq", "rq", "n"):
            assert ours[group][metric] == pytest.approx(official[group][metric], abs=1e-12)
    assert run("eval", "--masks", masks, "--root", prepared_root) == 0
    image = next((prepared_root / "leftImg8bit" / "val").rglob("*.png"))
    overlays = tmp_path / "overlays"
    assert run("visualize", image, "--checkpoint", runs["eps"], "--out", overlays) == 0
    assert len(list(overlays.glob("*.png"))) == 1
    predicted = tmp_path / "predicted"
    assert run("predict", image, "--checkpoint", runs["eps"], "--out", predicted, *NO_THRESHOLDS) == 0
    assert len(json.loads((predicted / "panoptic.json").read_text())["annotations"]) == 1


def test_a_solov2_and_mask_rcnn_mix_up_is_one_line(
    runs: dict[str, Path], prepared_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    # resuming a Mask R-CNN run with the SOLOv2 head
    folder = tmp_path / "run"
    shutil.copytree(runs["eps"].parent, folder)
    overrides = tiny_overrides(prepared_root, **(MASKRCNN | {"model__instance_head": "solov2"}))
    assert run(*cli_arguments("eps", folder, overrides, "--resume")) == 2
    error = capsys.readouterr().err
    assert "model.instance_head: 'maskrcnn' in the checkpoint, 'solov2' now" in error and "Traceback" not in error
    # a checkpoint whose weights are another head's than its config says
    state = load_checkpoint(runs["eps"])
    state["config"]["model"]["instance_head"] = "solov2"
    mixed = tmp_path / "mixed.pt"
    save_checkpoint(mixed, state)
    assert run("fuse", "--checkpoint", mixed, "--root", prepared_root, "--out", tmp_path / "pred") == 2
    error = capsys.readouterr().err.strip()
    assert "holds the weights of a model with a Mask R-CNN instance head" in error and "a SOLOv2 instance head" in error
    assert len(error.splitlines()) <= 2  # one message (the console may wrap it), no traceback
    # the network-defining head is not an inference-time override, and export says what runs the head
    assert run("fuse", "--checkpoint", runs["eps"], "--root", prepared_root, "--out", tmp_path / "p", "-s",
               "model.instance_head=solov2") == 2  # fmt: skip
    assert "decoding thresholds" in capsys.readouterr().err
    assert run("export", "--checkpoint", runs["eps"], "--out", tmp_path / "model.onnx") == 2
    assert "the Mask R-CNN head" in capsys.readouterr().err and not (tmp_path / "model.onnx").exists()


def test_the_boolean_instance_head_of_earlier_versions_still_reads():
    assert load_config(None, ["model.instance_head=true"]).model.instance_head == "solov2"
    assert load_config(None, ["model.instance_head=false"]).model.instance_head == "none"
    with pytest.raises(Exception, match="expected one of solov2, maskrcnn, none"):
        load_config(None, ["model.instance_head=mask-rcnn"])
    assert torch.cuda.is_available() or load_config(SYNTHETIC_EPS).model.instance_head == "solov2"
