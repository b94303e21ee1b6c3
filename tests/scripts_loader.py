"""scripts/ is not a package: load its files as modules, so tests can call their functions in-process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(filename: str):
    """scripts/<filename> as a module, once per session (registered, so dataclass hints resolve)."""
    name = f"flip_{Path(filename).stem}_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
