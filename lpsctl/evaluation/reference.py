"""The official cityscapesscripts panoptic evaluator (SPEC §5), wrapped to return `evaluate_panoptic`'s dict shape.

Slow (two `np.unique` sorts per image, one process per CPU core); used to cross-check the fast evaluator.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

from lpsctl.errors import DataError

logger = logging.getLogger(__name__)


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
    output = io.StringIO()
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(output):
        try:
            results = evaluatePanoptic(
                str(gt_json), str(gt_folder), str(pred_json), str(pred_folder), str(Path(scratch) / "results.json")
            )
        except (KeyError, ZeroDivisionError) as error:
            raise DataError(f"reference panoptic evaluation failed: {error}") from None
        except Exception as error:
            if str(error).startswith("no prediction for the image"):
                raise DataError(f"{pred_json}: {error}") from None
            raise
    logger.debug("evaluatePanoptic output:\n%s", output.getvalue())
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
