"""The shipped recipes (configs/*.yaml and the demo's lpsctl/demo.yaml) load, and list deviations only: no key set
to its dataclass default (STYLE.md, "YAML lists deviations only")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from lpsctl.config import Config, load_config, merge
from lpsctl.engine.demo import DEMO_CONFIG

CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))
RECIPES = [path.name for path in CONFIGS] + [DEMO_CONFIG]


@contextmanager
def recipe_path(name: str) -> Iterator[Path]:
    """A shipped recipe's file; the demo's is read from the package, as `lpsctl demo` reads it."""
    if name == DEMO_CONFIG:
        with resources.as_file(resources.files("lpsctl").joinpath(DEMO_CONFIG)) as path:
            yield path
    else:
        yield next(path for path in CONFIGS if path.name == name)


def repeated_defaults(data: dict[str, Any] | None) -> list[str]:
    """`section.key` of every key in the raw YAML mapping `data` whose value, read as load_config reads it (lists as
    tuples, ints as floats where declared), equals the default."""
    defaults = Config()
    repeated = []
    for section, values in (data or {}).items():
        for key, value in values.items():
            resolved = getattr(merge(defaults, {section: {key: value}}, source="recipe"), section)
            if getattr(resolved, key) == getattr(getattr(defaults, section), key):
                repeated.append(f"{section}.{key}")
    return repeated


def test_the_repeated_default_finder_sees_lists_and_ints():
    data = {"solver": {"steps": [22313, 26775], "clip_grad_norm": 35, "lr": 0.5}, "data": {"mean": [1, 2, 3]}}
    assert repeated_defaults(data) == ["solver.steps", "solver.clip_grad_norm"]
    assert repeated_defaults(None) == []


def test_there_are_recipes_to_check():
    assert {"cityscapes_eps.yaml", "synthetic_eps.yaml", "demo.yaml"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_loads_and_lists_only_deviations(name: str):
    with recipe_path(name) as path:
        config = load_config(path)
        data = yaml.safe_load(path.read_text())
    assert repeated_defaults(data) == [], f"{name} repeats defaults"
    assert (config == Config()) == (not data)  # every key it sets changes the config


def test_the_official_cityscapes_recipe_is_the_defaults_and_the_imagenet_backbone():
    """configs/cityscapes_eps.yaml names one deviation: the dataclass defaults are the EfficientPS recipe, which
    starts from ImageNet weights (the defaults train from scratch, so that nothing is downloaded unasked)."""
    with recipe_path("cityscapes_eps.yaml") as path:
        config = load_config(path)
    assert config == replace(Config(), model=replace(Config().model, pretrained=True))


@pytest.mark.parametrize("name", ["synthetic_eps.yaml", "synthetic_solo.yaml", DEMO_CONFIG])
def test_small_recipes_infer_in_their_training_precision(name: str):
    """These recipes train in fp32 and NCHW (solver.amp off, solver.channels_last false); inference keeps fp32 and
    runs the convolutions channels-last (the default: 1.4x faster on the CPU, the same PQ; BENCHMARKS.md)."""
    with recipe_path(name) as path:
        config = load_config(path)
    assert config.solver.channels_last is False and config.inference.channels_last is True
    assert config.solver.amp == "off" and config.inference.precision == "off"


@pytest.mark.parametrize("name", ["cityscapes_eps.yaml", "cityscapes_solo.yaml", "cityscapes_eps_maskrcnn.yaml"])
def test_the_cityscapes_recipes_are_the_official_ones(name: str):
    """SPEC §3.7: ImageNet backbone, no colour jitter, no stochastic depth, padding to 32 only, decay on everything."""
    with recipe_path(name) as path:
        config = load_config(path)
    assert config.model.pretrained and config.model.backbone == "efficientnet-b5"
    assert not config.data.color_jitter and not config.data.pad_to_crop and config.data.size_divisor == 32
    assert config.model.drop_path_rate == 0.0 and config.solver.norm_weight_decay is None
    assert (config.data.crop_height, config.data.crop_width) == (1024, 2048)
