"""The shipped recipes (configs/*.yaml and the demo's lpsctl/demo.yaml) load, and list deviations only: no key set
to its dataclass default (STYLE.md, "YAML lists deviations only")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


def test_the_official_cityscapes_recipe_is_the_defaults():
    """configs/cityscapes_eps.yaml names no deviation: the dataclass defaults are the EfficientPS recipe."""
    with recipe_path("cityscapes_eps.yaml") as path:
        assert load_config(path) == Config()


@pytest.mark.parametrize("name", ["synthetic_eps.yaml", "synthetic_solo.yaml", DEMO_CONFIG])
def test_small_recipes_infer_as_they_train(name: str):
    """These recipes train in fp32 and NCHW (solver.amp off, solver.channels_last false); inference does the same, as
    it did before it had a section of its own."""
    with recipe_path(name) as path:
        config = load_config(path)
    assert config.solver.channels_last is False and config.inference.channels_last is False
    assert config.solver.amp == "off" and config.inference.precision == "off"
