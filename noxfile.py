"""Task runner: `nox -s tests`, `nox -s lint`, `nox -s demo` each set up their own virtual environment."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True  # a second run reuses the environment (torch is large)
PYTHON = "3.11"
ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (fast tests plus the slow-marked ones); pass pytest arguments after `--`."""
    session.install("-e", ".[dev]")
    workers = os.environ.get("LPSCTL_TEST_WORKERS", "2")
    args = session.posargs or ["-n", workers, "--durations=15", "tests"]
    session.run("pytest", *args, env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (style, imports) and mypy (types)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "lpsctl", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "lpsctl", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "lpsctl")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job on built-in synthetic data: `lpsctl demo` (arguments after `--` go to it)."""
    session.install("-e", ".")
    session.run("lpsctl", "demo", *session.posargs, env=ENV)
