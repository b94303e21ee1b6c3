#!/usr/bin/env python
"""The benchmarks' one entry point: `--task speed` runs scripts/benchmark_speed.py and `--task quality`
scripts/benchmark_quality.py, with every other argument passed on. Each prints a table and writes JSON.

Examples:
    python scripts/benchmark.py --task speed --preset cpu-small
    python scripts/benchmark.py --task quality --preset cpu-small --seeds 3 --skip_ablations --resume
    python scripts/benchmark.py --task quality --help        # the task's own arguments
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

TASKS = {"speed": "benchmark_speed.py", "quality": "benchmark_quality.py"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("--task", choices=list(TASKS), help="speed or quality")
    args, rest = parser.parse_known_args(argv)
    if args.task is None:
        if {"-h", "--help"} & set(rest):
            parser.print_help()
            return
        parser.error("--task is required: speed or quality (add --help after it for the task's arguments)")
    script = Path(__file__).with_name(TASKS[args.task])
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
