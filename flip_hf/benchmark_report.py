"""Benchmark reports: what scripts/benchmark_speed.py and scripts/benchmark_quality.py write.

Each report is a pair of files, `<kind>-<preset>.json` (the measurements plus the command, the hardware
and the date) and `<kind>-<preset>.md` (the same header and the printed table), by default under the
source checkout's benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .model_card import get_hardware

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def write_report(kind: str, preset: str, payload: dict, table: str, command: str,
                 results_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Write `payload` as `<name>.json` and `table` as `<name>.md` in `results_dir` (default: benchmarks/results),
    both naming `command`, the hardware and the date; return the markdown file's path. `name` defaults to
    `<kind>-<preset>`: an earlier report of the same kind and preset is replaced, unless a run names its own."""
    directory = Path(RESULTS_DIR if results_dir is None else results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = name or f"{kind}-{preset}"
    payload = {**payload, "command": command, "hardware": get_hardware(num_processes=1),
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    (directory / f"{stem}.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    markdown = (f"# {kind} benchmark, preset `{preset}`\n\n- command: `{command}`\n- hardware: {payload['hardware']}\n"
                f"- date: {payload['date']}\n\n{table}\n")
    (directory / f"{stem}.md").write_text(markdown)
    return directory / f"{stem}.md"


__all__ = ["RESULTS_DIR", "write_report"]
