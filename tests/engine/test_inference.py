"""The inference engine: loading checkpoints, predicting at the original size, exporting masks keyed by image id and
reading them back, and fusing them into the right images whatever the order."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from lpsctl.config import to_dict
from lpsctl.data.cityscapes import coco_json, list_images
from lpsctl.data.dataset import ImageFolderDataset
from lpsctl.data.transforms import build_eval_transform
from lpsctl.engine.checkpoint import load_checkpoint, save_checkpoint
from lpsctl.engine.export import coco_image_ids, export_masks, read_masks
from lpsctl.engine.fuse import check_masks_cover, fuse_predictions, prepare_output
from lpsctl.engine.inference import load_model, predict, split_dataset
from lpsctl.errors import CheckpointError, ConfigError, DataError, LpsctlError
from lpsctl.imagefile import read_panoptic_png
from lpsctl.jsonfile import read_panoptic_json
from lpsctl.labels import THING_LABEL_IDS
from lpsctl.structures import Instances, Prediction
from tests.tiny_models import ROAD, tiny_config, write_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "eps": write_checkpoint(folder / "eps.pt", "eps"),
        "solo": write_checkpoint(folder / "solo.pt", "solo"),
        "semantic_only": write_checkpoint(folder / "semantic.pt", "eps", extra=("model.instance_head=false",)),
    }


def test_load_model_builds_the_checkpoints_network(checkpoints):
    model, config = load_model(checkpoints["eps"], CPU, need="semantic", overrides=["inference.fold_norms=false"])
    assert not model.training
    expected = replace(tiny_config("eps"), model=replace(tiny_config("eps").model, pretrained=False))
    assert config == replace(expected, inference=replace(expected.inference, fold_norms=False))
    stored = load_checkpoint(checkpoints["eps"])["model"]
    assert all(torch.equal(value, stored[key]) for key, value in model.state_dict().items())
    folded, _ = load_model(checkpoints["eps"], CPU, need="semantic")  # the default folds the norms into the convs
    assert len(folded.state_dict()) < len(stored)
    with pytest.raises(
        ConfigError,
        match=r"only fusion\.\*, inference\.\*, data\.eval_scale, data\.eval_max_size and the decoding thresholds",
    ):
        load_model(checkpoints["eps"], CPU, overrides=["model.fpn_channels=8"])
    with pytest.raises(ConfigError, match="decoding thresholds"):  # training settings of a head are not decoding
        load_model(checkpoints["eps"], CPU, overrides=["solo.sigma=0.3"])
    _, decoding = load_model(checkpoints["eps"], CPU, overrides=["solo.score_threshold=0.3"])
    assert decoding.solo.score_threshold == 0.3
    solo, solo_config = load_model(checkpoints["solo"], CPU, need="instance")
    assert solo.semantic_head is None and not solo_config.model.semantic_head


def test_load_model_names_the_right_command_for_the_wrong_kind(checkpoints):
    with pytest.raises(CheckpointError, match=r"instance-only \(train solo\).*fuse --masks"):
        load_model(checkpoints["solo"], CPU, need="semantic")
    with pytest.raises(CheckpointError, match="has no instance head"):
        load_model(checkpoints["semantic_only"], CPU, need="instance")


def test_load_model_rejects_weights_of_another_network(checkpoints, tmp_path: Path):
    state = load_checkpoint(checkpoints["eps"])
    state["config"] = to_dict(tiny_config("eps", "model.fpn_channels=32"))
    save_checkpoint(tmp_path / "mismatch.pt", state)
    with pytest.raises(CheckpointError, match="does not fit this model.*shape mismatch"):
        load_model(tmp_path / "mismatch.pt", CPU)


def test_predict_returns_each_image_at_its_original_size_in_order(checkpoints, prepared_root: Path):
    model, config = load_model(checkpoints["eps"], CPU)
    half = replace(config, data=replace(config.data, eval_scale=0.5))  # the network sees 64×128
    predictions = list(predict(model, split_dataset(half, prepared_root, "val"), half, CPU, batch_size=3))
    assert [p.image_id for p in predictions] == [item.image_id for item in list_images(prepared_root, "val")]
    for prediction in predictions:
        assert prediction.semantic_logits is not None and prediction.instances is not None
        assert prediction.semantic_logits.shape == (19, 128, 256)
        assert prediction.semantic_logits.dtype == torch.float32
        assert prediction.instances.masks.shape[1:] == (128, 256) and prediction.instances.masks.dtype == torch.bool
        assert len(prediction.instances) == 1 and prediction.instances.classes.tolist() == [2]


def test_predict_on_user_images_of_any_size(checkpoints, tmp_path: Path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 100), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (45, 130, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    model, config = load_model(checkpoints["eps"], CPU)
    dataset = ImageFolderDataset([tmp_path], transform=build_eval_transform(config.data))
    sizes = {}
    for prediction in predict(model, dataset, config, CPU, batch_size=2):  # two sizes padded into one batch
        assert prediction.semantic_logits is not None and torch.isfinite(prediction.semantic_logits).all()
        assert prediction.instances is not None
        assert prediction.instances.masks.shape[1:] == prediction.semantic_logits.shape[1:]
        sizes[prediction.image_id] = tuple(prediction.semantic_logits.shape[1:])
    assert sizes == {"gray": (70, 100), "rgba": (45, 130)}


def _instances(masks: np.ndarray, scores: list[float], classes: list[int]) -> Instances:
    return Instances(
        masks=torch.from_numpy(masks), scores=torch.tensor(scores), classes=torch.tensor(classes, dtype=torch.int64)
    )


def _box_masks(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        masks[index, y0:y1, x0:x1] = True
    return masks


def test_export_and_read_masks_round_trip(tmp_path: Path):
    masks = _box_masks(40, 60, [(0, 0, 10, 10), (20, 5, 50, 30), (5, 20, 15, 39)])
    predictions = [
        Prediction("city_000000_000001", None, _instances(masks, [0.9, 0.6, 0.3], [0, 2, 7])),
        Prediction("city_000000_000002", None, _instances(masks[:0], [], [])),
        Prediction("city_000000_000003", None, _instances(masks[1:2], [0.8], [5])),
    ]
    out = tmp_path / "masks.json"
    assert export_masks(predictions, out, {"city_000000_000001": 7}) == 4
    results = json.loads(out.read_text())
    assert [r["image_id"] for r in results] == [7, 7, 7, "city_000000_000003"]  # COCO id where known
    assert [r["category_id"] for r in results] == [THING_LABEL_IDS[c] for c in (0, 2, 7, 5)]
    assert np.array_equal(mask_utils.decode(results[1]["segmentation"]), masks[1])
    read = read_masks(out)
    assert sorted(read) == ["city_000000_000001", "city_000000_000003"]  # no entries: no detections
    assert torch.equal(read["city_000000_000001"].masks, torch.from_numpy(masks))
    assert read["city_000000_000001"].classes.tolist() == [0, 2, 7]
    assert read["city_000000_000001"].scores.tolist() == pytest.approx([0.9, 0.6, 0.3])
    # the file's order does not matter: instances come back by descending score
    (tmp_path / "reversed.json").write_text(json.dumps(results[::-1]))
    assert read_masks(tmp_path / "reversed.json")["city_000000_000001"].scores.tolist() == pytest.approx(
        [0.9, 0.6, 0.3]
    )


def test_read_masks_errors(tmp_path: Path):
    with pytest.raises(DataError, match="masks file not found"):
        read_masks(tmp_path / "missing.json")
    path = tmp_path / "masks.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_masks(path)
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="not an lpsctl masks file"):
        read_masks(path)
    rle = mask_utils.encode(np.asfortranarray(np.ones((4, 5), dtype=np.uint8)))
    entry = {
        "cs_image_id": "a",
        "category_id": 26,
        "score": 0.5,
        "segmentation": {**rle, "counts": rle["counts"].decode()},
    }
    path.write_text(json.dumps([{**entry, "category_id": 7}]))
    with pytest.raises(DataError, match="category_id 7 is not a Cityscapes thing label id"):
        read_masks(path)
    path.write_text(json.dumps([{**entry, "score": "high"}]))
    with pytest.raises(DataError, match="score 'high' of a is not a number"):
        read_masks(path)
    path.write_text(json.dumps([{**entry, "segmentation": [[0, 0, 4, 0, 4, 4]]}]))
    with pytest.raises(DataError, match="compressed RLE"):
        read_masks(path)
    path.write_text(json.dumps([entry, {**entry, "segmentation": {**entry["segmentation"], "size": [8, 10]}}]))
    with pytest.raises(DataError, match="differ in size"):
        read_masks(path)
    path.write_text(json.dumps([]))
    assert read_masks(path) == {}


def test_check_masks_cover():
    instances = _instances(_box_masks(4, 4, [(0, 0, 2, 2)]), [1.0], [0])
    check_masks_cover({"b": instances}, ["a", "b"], Path("m.json"))
    check_masks_cover({}, ["a"], Path("m.json"))  # no detections at all is a valid masks file
    with pytest.raises(DataError, match="m.json has no masks for any image of this split"):
        check_masks_cover({"train_1": instances}, ["val_1", "val_2"], Path("m.json"))


def _constant_logits(height: int, width: int) -> torch.Tensor:
    logits = torch.zeros(19, height, width)
    logits[ROAD] = 1.0
    return logits


def test_fusion_pairs_masks_with_images_by_id(tmp_path: Path):
    """Predictions arrive in one order, masks are listed in another: each image must get its own masks."""
    height, width = 32, 48
    own_boxes = {"img_a": (2, 2, 12, 12), "img_b": (30, 10, 46, 30), "img_c": (20, 20, 26, 28)}
    masks = {
        image_id: _instances(_box_masks(height, width, [box]), [0.9], [index])
        for index, (image_id, box) in enumerate(reversed(own_boxes.items()))
    }
    del masks["img_c"]  # an image without any exported mask
    predictions = [Prediction(i, _constant_logits(height, width), None) for i in ("img_b", "img_c", "img_a")]
    fuse_predictions(predictions, tmp_path, tiny_config("eps").fusion, masks=masks)
    annotations = {a["image_id"]: a for a in read_panoptic_json(tmp_path / "panoptic.json")["annotations"]}
    assert sorted(annotations) == ["img_a", "img_b", "img_c"]
    for image_id, (x0, y0, x1, y1) in own_boxes.items():
        ids = read_panoptic_png(tmp_path / "panoptic" / annotations[image_id]["file_name"])
        things = ids >= 1000
        if image_id == "img_c":
            assert not things.any()
            continue
        expected = np.zeros_like(things)
        expected[y0:y1, x0:x1] = True
        assert np.array_equal(things, expected), image_id
        label_id = THING_LABEL_IDS[int(masks[image_id].classes[0])]
        assert set(np.unique(ids[things]).tolist()) == {label_id * 1000}


def test_fusion_needs_semantic_logits(tmp_path: Path):
    with pytest.raises(LpsctlError, match="semantic logits"):
        fuse_predictions([Prediction("a", None, None)], tmp_path, tiny_config("eps").fusion)
    with pytest.raises(LpsctlError, match="no instance head"):
        fuse_predictions([Prediction("a", _constant_logits(8, 8), None)], tmp_path, tiny_config("eps").fusion)


def test_prepare_output_keeps_results_unless_told(tmp_path: Path):
    out = tmp_path / "pred"
    prepare_output(out, overwrite=False)
    (out / "panoptic").mkdir()
    (out / "panoptic" / "x.png").write_bytes(b"partial")
    prepare_output(out, overwrite=False)  # PNGs without panoptic.json: leftovers of a failed run
    assert not (out / "panoptic").exists()
    (out / "panoptic.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LpsctlError, match="already holds a prediction.*--overwrite"):
        prepare_output(out, overwrite=False)
    prepare_output(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only the prediction's own files go
    (tmp_path / "file").write_text("x")
    with pytest.raises(LpsctlError, match="is a file"):
        prepare_output(tmp_path / "file", overwrite=True)


def test_coco_image_ids(prepared_root: Path):
    ids = coco_image_ids(coco_json(prepared_root, "val"))
    assert sorted(ids) == [item.image_id for item in list_images(prepared_root, "val")]
    assert sorted(ids.values()) == list(range(1, len(ids) + 1))
    assert coco_image_ids(coco_json(prepared_root, "test")) == {}


def test_memory_format_changes_the_outputs_only_by_float_rounding(checkpoints):
    """inference.channels_last (default) runs the convolutions in NHWC: the raw outputs stay those of NCHW, and the
    model's own weights are not converted (validation during training must not change the model it runs)."""
    from lpsctl.engine.deploy import TorchNetwork, flatten

    images = torch.randn(2, 3, 128, 256, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for channels_last in (False, True):
        model, config = load_model(checkpoints["eps"], CPU, overrides=[f"inference.channels_last={channels_last}"])
        network = TorchNetwork(model, config, CPU)
        outputs[channels_last] = flatten(network(images))
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        assert conv.weight.is_contiguous()
        # the semantic logits come out of NHWC convolutions in NHWC (a 19-channel tensor is never both by chance)
        assert outputs[channels_last][0].is_contiguous(memory_format=torch.channels_last) == channels_last
    for nchw, nhwc in zip(outputs[False], outputs[True], strict=True):
        assert torch.allclose(nchw, nhwc, atol=1e-4, rtol=1e-4)


def test_compile_without_a_cpp_compiler_is_one_line_before_any_tracing(checkpoints, tmp_path, capsys):
    import torch._inductor.config as inductor

    from tests.cli_runner import run_lpsctl

    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    folder = tmp_path / "out"
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",)}):  # (monkeypatch's undo deletes inductor's entry)
        code = run_lpsctl("predict", tmp_path / "street.png", "--checkpoint", checkpoints["eps"], "--out", folder,
                          "--set", "inference.compile=true")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "inference.compile=true) on the CPU needs a C++ compiler" in err, err
    assert "Traceback" not in err and not folder.exists()


def test_precision_and_compile_flags_are_the_inference_settings(checkpoints, tmp_path, capsys):
    """--precision bf16 runs the network in bf16 (the same as --set inference.precision=bf16); an export cannot take
    it; a wrong value names the choices."""
    from lpsctl.cli.options import inference_overrides
    from tests.cli_runner import run_lpsctl

    assert inference_overrides(["fusion.score_threshold=0.3"], "bf16", True) == [
        "fusion.score_threshold=0.3", "inference.precision=bf16", "inference.compile=true"
    ]  # fmt: skip
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    assert run_lpsctl("predict", tmp_path / "street.png", "--checkpoint", checkpoints["eps"], "--out",
                      tmp_path / "bf16", "--precision", "bf16") == 0  # fmt: skip
    assert (tmp_path / "bf16" / "panoptic.json").is_file()
    capsys.readouterr()
    code = run_lpsctl("predict", tmp_path / "street.png", "--model", tmp_path / "model.onnx", "--out",
                      tmp_path / "onnx", "--precision", "bf16")  # fmt: skip
    assert code == 2 and "an export runs as it was exported" in capsys.readouterr().err
    code = run_lpsctl("predict", tmp_path / "street.png", "--model", tmp_path / "model.onnx", "--out",
                      tmp_path / "onnx", "--set", "inference.compile=true")  # fmt: skip
    assert code == 2 and "an export runs as it was exported" in capsys.readouterr().err
    code = run_lpsctl("visualize", tmp_path / "bf16", "--out", tmp_path / "overlays", "--precision", "bf16")
    assert code == 2 and "is a prediction folder, drawn as it is" in capsys.readouterr().err
    assert run_lpsctl("visualize", tmp_path / "bf16", "--images", tmp_path, "--out", tmp_path / "overlays") == 0
    code = run_lpsctl("predict", tmp_path / "street.png", "--checkpoint", checkpoints["eps"], "--out",
                      tmp_path / "fp8", "--precision", "fp8")  # fmt: skip
    assert code == 2 and "inference.precision: expected one of off, fp16, bf16" in capsys.readouterr().err


def test_a_compile_failure_after_tracing_is_one_line():
    """A build that fails once tracing is done (here the C++ compiler disappears after the up-front check) is an
    LpsctlError naming torch.compile and --compile, not inductor's traceback."""
    import torch._inductor.config as inductor

    from lpsctl.config import load_config
    from lpsctl.engine.deploy import TorchNetwork

    config = load_config(None, ["inference.compile=true", "inference.precision=off"])
    network = TorchNetwork(torch.nn.Conv2d(3, 4, 3), config, CPU)  # type: ignore[arg-type]
    torch._dynamo.reset()
    broken = inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False})
    with broken, pytest.raises(LpsctlError, match=r"torch.compile failed \(\w+: .*\); run without --compile"):
        network(torch.randn(1, 3, 8, 8))
    torch._dynamo.reset()
