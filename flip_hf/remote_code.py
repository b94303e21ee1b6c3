"""Ship FLIP's code with each checkpoint, so users without flip_hf can load it (`trust_remote_code=True`).

transformers copies a custom model's file and the *flat* files it imports relatively. The backbone
zoo is a package (one file per backbone), so here it is bundled into a single `backbones.py`
beside `modeling_flip.py`, which imports it as `from .backbones import ...` either way.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

AUTO_MAP = {
    "AutoConfig": "configuration_flip.FlipConfig",
    "AutoModel": "modeling_flip.FlipForCTR",
    "AutoModelForPreTraining": "modeling_flip.FlipForPretraining",
    "AutoModelForSequenceClassification": "modeling_flip.FlipForCTR",
}
_FUTURE = re.compile(r"^from __future__ import .*\n", flags=re.MULTILINE)
_BASE_IMPORT = re.compile(r"^from \.base import .*\n", flags=re.MULTILINE)


def bundle_backbones(backbone_module_name: str) -> str:
    """The source of the backbone zoo as one module: base.py first, then each backbone file."""
    module = sys.modules[backbone_module_name]
    path = Path(module.__file__)
    if path.parent.name != "backbones":  # already a bundle (loaded as remote code)
        return path.read_text(encoding="utf-8")
    base = path.parent / "base.py"
    others = sorted(p for p in path.parent.glob("*.py") if p.name not in ("base.py", "__init__.py"))
    parts = ['"""FLIP ID backbones, bundled from flip_hf/backbones/ when this checkpoint was saved."""\n',
             "from __future__ import annotations\n"]
    for file in [base, *others]:
        source = _BASE_IMPORT.sub("", _FUTURE.sub("", file.read_text(encoding="utf-8")))
        parts.append(f"\n# ---- {file.name}\n{source}")
    return "".join(parts)


def _code_files(modeling_file: Path) -> list[Path]:
    """modeling_flip.py and every flat module it imports relatively, recursively (the zoo aside)."""
    from transformers.dynamic_module_utils import get_relative_imports

    files, pending = [], [modeling_file]
    while pending:
        file = pending.pop()
        files.append(file)
        for name in get_relative_imports(file):
            candidate = file.with_name(f"{name}.py")
            if name != "backbones" and candidate not in files and candidate not in pending:
                pending.append(candidate)
    return files


def save_remote_code(save_directory: str | Path, config, backbone_module_name: str) -> None:
    """Write the model code next to the weights and point every Auto class at it."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    for file in _code_files(Path(__file__).with_name("modeling_flip.py")):
        shutil.copyfile(file, save_directory / file.name)
    (save_directory / "backbones.py").write_text(bundle_backbones(backbone_module_name), encoding="utf-8")
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **AUTO_MAP}
