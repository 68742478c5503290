"""`lpsctl train eps | solo`: the joint EfficientPS+SOLOv2 model, or SOLOv2 alone, on one engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from lpsctl.cli.options import CONFIG, SET, progress_bar, resolve_config

if TYPE_CHECKING:  # the engine (torch) is imported when a command runs, so `lpsctl --help` starts fast
    from lpsctl.engine.train import Mode, TrainSummary

app = typer.Typer(help="Train the joint model (eps) or the instance-only SOLOv2 model (solo).", no_args_is_help=True)
console = Console()

OUT = typer.Option(..., "--out", "-o", help="Run folder for checkpoints and metrics, e.g. runs/eps.")
RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt.")
OVERWRITE = typer.Option(False, "--overwrite", help="Start again in an --out folder that holds a run.")
VALIDATE = typer.Option(True, "--validate/--no-validate", help="Evaluate on the val split every solver.eval_period.")


HELP: dict[Mode, str] = {
    "eps": "Train EfficientPS with an instance head (SOLOv2 by default; model.instance_head=maskrcnn: EfficientPS's "
    "original Mask R-CNN head), semantic + instance losses, validated by PQ.",
    "solo": "Train the instance-only model (EfficientNet + 2-way FPN + the config's instance head), validated by "
    "mask AP.",
}


def _command(mode: Mode) -> None:
    """Register `lpsctl train MODE`: both modes share options and body, they differ in the model they train."""

    def command(
        out: Path = OUT,
        config: Path | None = CONFIG,
        overrides: list[str] | None = SET,
        resume: bool = RESUME,
        overwrite: bool = OVERWRITE,
        run_validation: bool = VALIDATE,
    ) -> None:
        _run(mode, out, config, overrides, resume, overwrite, run_validation)

    command.__doc__ = HELP[mode]
    app.command(mode)(command)


def _run(
    mode: Mode,
    out: Path,
    config_path: Path | None,
    overrides: list[str] | None,
    resume: bool,
    overwrite: bool,
    run_validation: bool,
) -> None:
    config = resolve_config(config_path, overrides)
    # under torchrun every rank runs this command; only rank 0 trains visibly (it alone logs and checkpoints)
    is_main = os.environ.get("RANK", "0") == "0"
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        _refuse_early(out, config.data.root, resume, overwrite)
    with progress_bar(status=True, disable=not is_main) as update:

        def on_step(iteration: int, total: int, values: dict[str, float]) -> None:
            terms = " ".join(f"{k.removeprefix('loss_')}={v:.3f}" for k, v in values.items() if k.startswith("loss"))
            update(
                f"train {mode}", iteration, total, f"{terms} lr={values['lr']:.2e} {values['images_per_s']:.1f} img/s"
            )

        from lpsctl.engine.train import train
        from lpsctl.engine.validation import validate

        summary = train(
            config,
            out,
            mode=mode,
            resume=resume,
            overwrite=overwrite,
            on_step=on_step,
            validate=validate if run_validation else None,
        )
    _report(summary, is_main)


def _refuse_early(out: Path, root: str, resume: bool, overwrite: bool) -> None:
    """The run-folder and dataset mistakes, found in a fraction of a second rather than after the model is built
    (under torchrun, rank 0 finds the run-folder ones and tells every rank)."""
    from lpsctl.data.cityscapes import require_root
    from lpsctl.engine.rundir import run_folder_conflict

    conflict = run_folder_conflict(out, resume=resume, overwrite=overwrite)
    if conflict is not None:
        raise conflict
    require_root(root)


def _report(summary: TrainSummary, is_main: bool = True) -> None:
    if is_main:
        state = "[yellow]interrupted[/]" if summary.interrupted else "[green]done[/]"
        if summary.last_checkpoint.exists():
            console.print(f"{state} at iteration {summary.iterations}; checkpoint: {summary.last_checkpoint}")
        else:  # e.g. solver.max_iters=0: nothing trained, nothing written
            console.print(f"{state} at iteration {summary.iterations}; no checkpoint written")
        if summary.best_checkpoint is not None:
            console.print(f"best: {summary.best_checkpoint} (val {summary.best_metric:.2f})")
        if summary.interrupted:
            console.print(f"continue with the same command and --resume (run folder {summary.run_dir})")
    if summary.interrupted:
        raise typer.Exit(130)


for _mode in HELP:
    _command(_mode)
