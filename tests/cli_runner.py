"""Running `lpsctl` in the test process, as a user would from a shell."""

from __future__ import annotations

from lpsctl.cli.app import main


def run_lpsctl(*args: object) -> int:
    """`lpsctl ARGS`; its exit code (0 when the command returns normally)."""
    try:
        main([str(a) for a in args])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
