"""Ship FLIP's code with each checkpoint, so users without flip_hf can load it (`trust_remote_code=True`).

transformers copies a custom model's file and the *flat* files it imports relatively. The backbone
zoo is a package (one file per backbone), so here it is bundled into a single `backbones.py`
beside `modeling_flip.py`, which imports it as `from .backbones import ...` either way. A backbone
registered outside the zoo (`@register_backbone` in your own module) is bundled too: its module's
source is appended, with its imports of flip_hf's backbones dropped (those names are in the bundle).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import re
import shutil
import site
import sys
import sysconfig
import types
from pathlib import Path

logger = logging.getLogger(__name__)

AUTO_MAP = {
    "AutoConfig": "configuration_flip.FlipConfig",
    "AutoModel": "modeling_flip.FlipForCTR",
    "AutoModelForPreTraining": "modeling_flip.FlipForPretraining",
    "AutoModelForSequenceClassification": "modeling_flip.FlipForCTR",
}
_FUTURE = re.compile(r"^from __future__ import .*\n", flags=re.MULTILINE)
_BASE_IMPORT = re.compile(r"^from \.base import .*\n", flags=re.MULTILINE)
# a custom backbone's imports of the zoo, which the bundle already defines
_ZOO_IMPORT = re.compile(r"^(?:from flip_hf\.backbones(?:\.\w+)? import .*|import flip_hf\.backbones.*)\n", flags=re.MULTILINE)


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


def with_custom_backbone(bundle: str, backbone: str, backbone_module_name: str) -> str:
    """The bundle, plus the module of `backbone` if that backbone was registered outside the zoo.

    The result is executed once here, so a backbone whose module cannot live in the bundle (it imports
    other local code, or has no source file) is reported when the checkpoint is saved, not when a user
    without flip_hf loads it.
    """
    cls = sys.modules[backbone_module_name].BACKBONE_REGISTRY.get(backbone)
    zoo = backbone_module_name.rsplit(".", 1)[0]  # flip_hf.backbones, or the folder of a loaded bundle
    if cls is None or cls.__module__.startswith(zoo + ".") or cls.__module__ == backbone_module_name:
        return bundle
    try:
        source = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8")
        local = _local_imports(source)
        if local:
            raise ValueError(f"its module imports local code that the bundle cannot carry: {', '.join(local)}")
        extended = f"{bundle}\n# ---- {backbone!r}, registered in {cls.__module__}\n{_FUTURE.sub('', _ZOO_IMPORT.sub('', source))}"
        module = types.ModuleType("flip_backbones_check")
        exec(compile(extended, "backbones.py", "exec"), module.__dict__)  # noqa: S102 - the user's own code, as loading runs it
        if backbone not in module.BACKBONE_REGISTRY:
            raise ValueError(f"its module does not register {backbone!r} when run on its own")
    except Exception as error:  # whatever fails here would fail for the user loading the checkpoint
        logger.warning(
            "The custom backbone %r (%s in %s) could not be bundled with the checkpoint (%s): loading it with "
            "trust_remote_code and without your module will fail. Keep the backbone in one module that imports only "
            "torch and flip_hf.backbones, or load the checkpoint with flip_hf and that module imported.",
            backbone, cls.__name__, cls.__module__, error,
        )
        return bundle
    return extended


def _local_imports(source: str) -> list[str]:
    """Modules a backbone's source imports that are neither installed packages nor the standard library (and so
    would be missing where the checkpoint is loaded); flip_hf's own backbones are in the bundle, the rest of
    flip_hf is not."""
    installed = [Path(p).resolve() for p in (*site.getsitepackages(), sysconfig.get_paths()["stdlib"])]
    local = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            local.append("." * node.level + (node.module or ""))
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            if name == "__future__" or name.startswith("flip_hf.backbones"):
                continue
            spec = importlib.util.find_spec(name.split(".")[0])
            origin = Path(spec.origin).resolve() if spec is not None and spec.origin not in (None, "built-in", "frozen") else None
            builtin = spec is not None and spec.origin in ("built-in", "frozen")
            if name.startswith("flip_hf") or not (builtin or (origin and any(origin.is_relative_to(p) for p in installed))):
                local.append(name)
    return local


def save_remote_code(save_directory: str | Path, config, backbone_module_name: str) -> None:
    """Write the model code next to the weights and point every Auto class at it."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    for file in _code_files(Path(__file__).with_name("modeling_flip.py")):
        shutil.copyfile(file, save_directory / file.name)
    bundle = with_custom_backbone(bundle_backbones(backbone_module_name), config.backbone, backbone_module_name)
    (save_directory / "backbones.py").write_text(bundle, encoding="utf-8")
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **AUTO_MAP}
