"""`lpsctl data check` on full-size data: seconds for the full decode (1 and 2 workers) and for `--quick`.

    python benchmarks/data_check_time.py [--images 100]      # ~2 minutes on 2 CPU cores (synthesis included)

The dataset is `lpsctl data synth` at 1024×2048 (80 % train, 20 % val), prepared; every check runs as its own
process, timed from outside, with its peak RSS (the largest of the process and its worker processes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: runs one lpsctl command as its only child; prints its exit code and peak RSS (kB), so each figure is its own
WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.run([sys.executable, '-m', 'lpsctl', *sys.argv[1:]], capture_output=True).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    workers = str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "fullsize"
        train = args.images * 4 // 5
        for step in (["data", "synth", "--root", str(root), "--train", str(train), "--val", str(args.images - train),
                      "--height", "1024", "--width", "2048", "--workers", workers],
                     ["data", "prepare", "--root", str(root), "--workers", workers]):  # fmt: skip
            subprocess.run([sys.executable, "-m", "lpsctl", *step], check=True, capture_output=True)
        print(f"lpsctl data check on {args.images} synthetic 1024×2048 images ({os.cpu_count()} cores):")
        for label, flags in (("full, --workers 1", ["--workers", "1"]), ("full, --workers 2", ["--workers", "2"]),
                             ("--quick", ["--quick"])):  # fmt: skip
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", WRAPPER, "data", "check", "--root", str(root), *flags],
                                    capture_output=True, text=True)  # fmt: skip
            seconds = time.perf_counter() - start
            code, peak = (int(value) for value in result.stdout.split()[-2:])
            state = "passed" if code == 0 else f"exit {code}"
            print(f"  {label:18s} {seconds:6.1f} s ({seconds / args.images:.2f} s/image), {state}; "
                  f"peak RSS {peak / 2**20:.2f} GB (the check and its workers' largest)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
