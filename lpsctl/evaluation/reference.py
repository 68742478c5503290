"""The official cityscapesscripts panoptic evaluator (SPEC §5), wrapped to return `evaluate_panoptic`'s dict shape.

Slow (two `np.unique` sorts per image, one process per CPU core); used to cross-check the fast evaluator.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

from lpsctl.errors import DataError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _captured_output() -> Iterator[Callable[[], str]]:
    """Send file descriptors 1 and 2 (this process's and its worker processes' prints and tracebacks) to a temporary
    file while the block runs; yields a function that returns what was written."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.redirect_stdout(io.StringIO()) as python_output:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: "".join(captured)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip((1, 2), saved, strict=True):
                os.dup2(original, fd)
                os.close(original)
            sink.seek(0)
            captured += [python_output.getvalue(), sink.read().decode(errors="replace")]


def evaluate_panoptic_reference(
    gt_json: str | Path, gt_folder: str | Path, pred_json: str | Path, pred_folder: str | Path
) -> dict[str, Any]:
    """Run `evaluatePanoptic` (its printout goes to the debug log, its results file to a temporary folder).

    Returns {"All" | "Things" | "Stuff": {"pq", "sq", "rq", "n"}, "per_class": {name: {"pq", "sq", "rq"}}}.
    Errors of the reference (a missing prediction, an id in the PNG but not in the JSON, …) are raised as DataError.
    """
    for path in (Path(gt_json), Path(pred_json)):
        if not path.is_file():
            raise DataError(f"panoptic JSON not found: {path}")
    for folder in (Path(gt_folder), Path(pred_folder)):
        if not folder.is_dir():  # the reference would sys.exit here
            raise DataError(f"panoptic PNG folder not found: {folder}")
    with tempfile.TemporaryDirectory() as scratch, _captured_output() as output:
        try:
            results = evaluatePanoptic(
                str(gt_json), str(gt_folder), str(pred_json), str(pred_folder), str(Path(scratch) / "results.json")
            )
        except (KeyError, ZeroDivisionError, ValueError) as error:
            raise DataError(f"reference panoptic evaluation failed: {type(error).__name__}: {error}") from None
        except Exception as error:
            if str(error).startswith("no prediction for the image"):
                raise DataError(f"{pred_json}: {error}") from None
            raise
        finally:
            gc.collect()  # a failed run's multiprocessing pool is torn down here, with its output captured
    logger.debug("evaluatePanoptic output:\n%s", output())
    names = {category["id"]: category["name"] for category in json.loads(Path(gt_json).read_text())["categories"]}
    converted: dict[str, Any] = {
        group: {metric: float(results[group][metric]) for metric in ("pq", "sq", "rq")}
        for group in ("All", "Things", "Stuff")
    }
    for group in ("All", "Things", "Stuff"):
        converted[group]["n"] = int(results[group]["n"])
    converted["per_class"] = {
        names[category_id]: {metric: float(value) for metric, value in scores.items()}
        for category_id, scores in results["per_class"].items()
    }
    return converted
