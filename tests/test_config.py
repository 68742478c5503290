from pathlib import Path

import pytest

from lpsctl.config import Config, dump, from_dict, load_config, to_dict
from lpsctl.errors import ConfigError


def test_defaults_follow_the_spec():
    config = load_config()
    assert config.model.backbone == "efficientnet-b5"
    assert config.solo.grids == (40, 36, 24, 16, 12)
    assert config.semantic.dpc_dilations == ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))
    assert config.fusion.stuff_area == 2048 and config.fusion.logit_scale == 4.0


def test_yaml_then_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: efficientnet-b0\nsolver:\n  lr: 0.01\n  steps: [10, 20]\n")
    config = load_config(
        path, ["solver.lr=2e-3", "solo.scale_ranges=[[1, 64], [32, 128]]", "model.backbone_weights=w.pth"]
    )
    assert config.model.backbone == "efficientnet-b0"
    assert config.solver.lr == 0.002 and isinstance(config.solver.lr, float)
    assert config.solver.steps == (10, 20)
    assert config.solo.scale_ranges == ((1, 64), (32, 128))
    assert config.model.backbone_weights == "w.pth"


def test_int_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["solver.lr=1"]).solver.lr == 1.0
    with pytest.raises(ConfigError, match=r"solver.max_iters: expected int"):
        load_config(None, ["solver.max_iters=1.5"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.lrr=1", r"unknown key 'lrr'; valid keys: optimizer, lr"),
        ("solvr.lr=1", r"unknown config section 'solvr'; valid sections: data, model"),
        ("solver.lr", r"expected section.key=value"),
        ("model.norm=fast", r"expected one of auto, iabn, torch"),
        ("data.mean=[1, 2]", r"expected 3 values, got 2"),
        ("model.pretrained=yes please", r"expected bool"),
        ("solo.grids=[40, x]", r"solo.grids\[1\]: expected int"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_yaml_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model:\n  depth: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'depth'"):
        load_config(wrong)


def test_round_trip_through_plain_data():
    config = load_config(None, ["solo.grids=[12, 8]", "model.backbone=efficientnet-b0"])
    assert from_dict(to_dict(config)) == config
    assert "efficientnet-b0" in dump(config)
    assert Config() == from_dict({})


def test_shipped_configs_load():
    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")):
        load_config(path)
