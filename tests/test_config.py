"""The config system's behaviour: YAML then overrides, type checks, errors that name the problem, the plain-data round
trip of checkpoints (retired keys included), and the SPEC recipe numbers that the defaults must keep."""

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from lpsctl.config import Config, dump, from_dict, load_config, to_dict
from lpsctl.errors import ConfigError

CITYSCAPES_TRAIN_IMAGES = 2975  # Cityscapes train split (gtFine)
EFFICIENTPS_BATCH = 16  # SPEC §3.7: the EfficientPS recipe's total batch


def _iterations(epochs: int) -> int:
    return math.ceil(epochs * CITYSCAPES_TRAIN_IMAGES / EFFICIENTPS_BATCH)


def test_defaults_are_the_efficientps_cityscapes_recipe():
    """SPEC §3.7, EfficientPS official: each number as the SPEC states it."""
    config = Config()
    solver, data = config.solver, config.data
    assert (solver.optimizer, solver.lr, solver.lr_reference_batch) == ("sgd", 0.07, EFFICIENTPS_BATCH)
    assert (solver.momentum, solver.weight_decay, solver.clip_grad_norm) == (0.9, 1e-4, 35.0)
    assert (solver.warmup_iters, solver.warmup_factor) == (500, 1 / 3)  # linear warm-up of 500 iters from lr/3
    assert solver.schedule == "step" and solver.gamma == 0.1
    assert solver.max_iters == _iterations(160)
    assert solver.steps == (_iterations(120), _iterations(144))
    assert (data.crop_height, data.crop_width, data.scale_min, data.scale_max) == (1024, 2048, 0.5, 2.0)
    assert data.flip_prob == 0.5
    assert data.mean == (106.433, 116.617, 119.559) and data.std == (65.496, 67.6, 74.123)  # on 0-255 RGB


def test_yaml_deviations_then_overrides_in_order(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: efficientnet-b0\nsolver:\n  lr: 0.01\n  steps: [10, 20]\n")
    overrides = ["solver.lr=2e-3", "solo.scale_ranges=[[1, 64], [32, 128]]", "model.backbone_weights=w.pth"]
    config = load_config(path, [*overrides, "solver.steps=[5]", "solver.steps=[7, 9]"])
    assert config.model.backbone == "efficientnet-b0"  # from the file
    assert config.solver.lr == 0.002 and isinstance(config.solver.lr, float)  # the override beats the file
    assert config.solver.steps == (7, 9)  # the last override wins
    assert config.solo.scale_ranges == ((1, 64), (32, 128))
    assert config.model.backbone_weights == "w.pth"
    # what neither the file nor an override names keeps its default, in the same section and elsewhere
    defaults = Config()
    assert config.solver.momentum == defaults.solver.momentum and config.model.norm == defaults.model.norm
    assert config.data == defaults.data and config.fusion == defaults.fusion


def test_a_file_of_comments_only_is_the_defaults(tmp_path: Path):
    path = tmp_path / "comments.yaml"
    path.write_text("# the defaults are the recipe\n# nothing to change\n")
    assert load_config(path) == Config()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_values_are_converted_to_the_declared_types():
    config = load_config(None, ["solver.lr=1", "solver.steps=[]", "model.backbone_weights=null", "data.mean=[1, 2, 3]"])
    assert config.solver.lr == 1.0 and isinstance(config.solver.lr, float)
    assert config.solver.steps == () and config.model.backbone_weights is None
    assert config.data.mean == (1.0, 2.0, 3.0) and all(isinstance(v, float) for v in config.data.mean)
    with pytest.raises(ConfigError, match=r"solver.max_iters: expected int"):
        load_config(None, ["solver.max_iters=1.5"])
    with pytest.raises(ConfigError, match=r"solver.max_iters: expected int"):
        load_config(None, ["solver.max_iters=true"])  # a bool is not a number here


def test_unquoted_off_is_the_word_off_where_a_setting_takes_words(tmp_path):
    """YAML 1.1 reads off/on/no/yes as booleans; a setting whose values are words gets the word back (the user
    typed `--set solver.amp=off`, not a boolean), and a boolean setting still takes booleans."""
    config = load_config(None, ["solver.amp=off", "inference.precision=off", "model.pretrained=off"])
    assert config.solver.amp == "off" and config.inference.precision == "off" and config.model.pretrained is False
    path = tmp_path / "recipe.yaml"
    path.write_text("solver:\n  amp: off\ninference:\n  precision: Off\n")
    assert load_config(path).solver.amp == "off" and load_config(path).inference.precision == "off"
    with pytest.raises(ConfigError, match=r"model.norm: expected one of auto, iabn, torch, got False"):
        load_config(None, ["model.norm=off"])  # no word of that meaning among its values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.lrr=1", r"unknown key 'lrr'; valid keys: optimizer, lr"),
        ("solvr.lr=1", r"unknown config section 'solvr'; valid sections: data, model"),
        ("solver.lr", r"expected section.key=value"),
        ("model.norm=fast", r"expected one of auto, iabn, torch"),
        ("inference.precision=fp8", r"inference.precision: expected one of off, fp16, bf16"),
        ("data.mean=[1, 2]", r"expected 3 values, got 2"),
        ("model.pretrained=yes please", r"expected bool"),
        ("solo.grids=[40, x]", r"solo.grids\[1\]: expected int"),
        ("semantic.num_classes=19", r"unknown key 'num_classes'"),  # retired: not a setting any more
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [unclosed\n", "not valid YAML"),
        ("model:\n  depth: 3\n", "unknown key 'depth'"),
        ("- model\n", "expected a mapping of sections"),
        ("model: efficientnet-b0\n", "section 'model' must be a mapping"),
        ("solo:\n  num_classes: 8\n", "unknown key 'num_classes'"),  # retired keys are dropped only from checkpoints
    ],
)
def test_bad_yaml_files(text: str, message: str, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_yaml_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


ROUND_TRIP_OVERRIDES = [
    "data.root=/somewhere",
    "data.mean=[1, 2.5, 3]",
    "model.backbone=efficientnet-b0",
    "model.backbone_weights=w.pth",
    "semantic.dpc_dilations=[[1, 2], [3, 4]]",
    "solo.grids=[12, 8]",
    "solo.nms_kernel=linear",
    "solver.steps=[]",
    "solver.amp=bf16",
    "inference.channels_last=false",
    "fusion.logit_scale=2",
]


def test_round_trip_through_plain_data():
    config = load_config(None, ROUND_TRIP_OVERRIDES)
    plain = to_dict(config)
    assert json.loads(json.dumps(plain)) == plain  # lists, not tuples: JSON, YAML and weights_only loads take it
    assert from_dict(plain) == config
    assert from_dict(yaml.safe_load(dump(config))) == config
    assert from_dict(to_dict(Config())) == Config() == from_dict({})


def test_stored_configs_of_earlier_versions_drop_the_retired_class_counts():
    """Earlier checkpoints stored semantic.num_classes: 19 and solo.num_classes: 8, the values now derived."""
    stored = to_dict(load_config(None, ["solver.lr=0.5"]))
    stored["semantic"]["num_classes"] = 19
    stored["solo"]["num_classes"] = 8
    assert from_dict(stored) == load_config(None, ["solver.lr=0.5"])


@pytest.mark.parametrize(("section", "value", "fixed"), [("semantic", 20, 19), ("solo", 7, 8)])
def test_a_retired_key_with_another_value_is_refused(section: str, value: int, fixed: int):
    """Another class count describes a model this version cannot build."""
    stored = to_dict(Config())
    stored[section]["num_classes"] = value
    message = rf"{section}\.num_classes = {value} is no longer a setting \(always {fixed}\)"
    with pytest.raises(ConfigError, match=message):
        from_dict(stored)


def test_stored_config_with_an_unknown_key_is_refused():
    stored = to_dict(Config())
    stored["solver"]["lr_multiplier"] = 2
    with pytest.raises(ConfigError, match=r"stored config: solver: unknown key 'lr_multiplier'"):
        from_dict(stored)


def test_renamed_keys_of_earlier_versions_still_read():
    """data.photometric became data.color_jitter (off in the official recipes)."""
    assert load_config(None, ["data.photometric=true"]).data.color_jitter is True
    assert from_dict({"data": {"photometric": False}}).data.color_jitter is False


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("data.batch_size=0", "data.batch_size: must be > 0, got 0"),
        ("solver.lr=-1", "solver.lr: must be > 0, got -1.0"),
        ("data.num_workers=-2", "data.num_workers: must be >= 0"),
        ("fusion.score_threshold=1.5", "fusion.score_threshold: must be in [0, 1], got 1.5"),
        ("solo.mask_threshold=1", "solo.mask_threshold: must be in (0, 1)"),
        ("maskrcnn.rpn_nms=2", "maskrcnn.rpn_nms: must be in [0, 1]"),
    ],
)
def test_values_out_of_range_are_refused_where_they_are_set(item: str, message: str, tmp_path: Path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [item])
    section, _, rest = item.partition(".")
    key, _, value = rest.partition("=")
    (tmp_path / "bad.yaml").write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(f"bad.yaml: {section}.{key}: must be")):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{key}: must be")):
        from_dict({section: {key: yaml.safe_load(value)}})


def test_every_bound_names_a_key_and_holds_for_the_defaults():
    from dataclasses import fields

    from lpsctl.config import _RULES, BOUNDS

    defaults = Config()
    sections = {type(getattr(defaults, f.name)): getattr(defaults, f.name) for f in fields(defaults)}
    for (section_type, key), rule in BOUNDS.items():
        assert key in {f.name for f in fields(section_type)}, (section_type.__name__, key)
        value = getattr(sections[section_type], key)
        assert value is None or _RULES[rule](value), (section_type.__name__, key, value)
