"""The package's layers point one way (DESIGN.md, "Layers"), read from the source with ``ast``.

Every module of ``anomaly_kernels`` belongs to a layer; a module may import its own layer and the
layers below, never one above. Production code does not import ``reference`` (the test and
benchmark oracle), and imports sit at the top of their module unless listed below with a reason.
Nothing is imported: the source is parsed, so the test is fast and sees every module.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

import anomaly_kernels.components.base as base
import anomaly_kernels.models as models
from anomaly_kernels.components.search import nearest_neighbors
from anomaly_kernels.lightning import AnomalyModule, OnePassAnomalyModule

PACKAGE = "anomaly_kernels"
SOURCE_ROOT = Path(__file__).resolve().parents[1] / "python"

# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("core", (
        "anomaly_kernels", "anomaly_kernels._C", "anomaly_kernels._build_info", "anomaly_kernels._info",
        "anomaly_kernels._validation", "anomaly_kernels.ops", "anomaly_kernels.batched_gaussian_fit",
        "anomaly_kernels.packed_precision",
    )),
    ("metrics", ("anomaly_kernels.metrics",)),
    ("components", ("anomaly_kernels.components",)),
    ("distributed", ("anomaly_kernels.distributed", "anomaly_kernels.data")),
    ("lightning", ("anomaly_kernels.lightning",)),
    ("models", ("anomaly_kernels.models",)),
    ("applications", ("anomaly_kernels.pipeline", "anomaly_kernels.bench", "anomaly_kernels.reference")),
    ("deployment", ("anomaly_kernels.deploy",)),
    ("command line", ("anomaly_kernels.cli", "anomaly_kernels.__main__")),
]
# The only production modules that may import the oracle.
REFERENCE = "anomaly_kernels.reference"
REFERENCE_USERS = ("anomaly_kernels.bench",)

# Old module paths kept importable after their code moved up a layer: they hold nothing but
# imports from the new home, and may import it although it is above them.
COMPATIBILITY_MODULES: Dict[str, str] = {
    "anomaly_kernels.components.base.anomaly_module": "anomaly_kernels.lightning.anomaly_module",
    "anomaly_kernels.distributed.lightning_ddp": "anomaly_kernels.lightning.ddp",
}

# (importing module, imported module) -> why the import is inside a function.
DEFERRED_FOR_A_REASON: Dict[Tuple[str, str], str] = {
    ("anomaly_kernels.components", "anomaly_kernels.lightning.anomaly_module"):
        "AnomalyModule's documented path; Lightning takes seconds to import and only its users pay",
    ("anomaly_kernels.components", "anomaly_kernels.components.feature_extractors"):
        "timm imports torchvision, which does not load beside every torch build: only FeatureExtractor users pay",
    ("anomaly_kernels.components.base", "anomaly_kernels.lightning.anomaly_module"):
        "AnomalyModule's documented path; Lightning takes seconds to import and only its users pay",
    ("anomaly_kernels.cli", "anomaly_kernels.pipeline"):
        "--help, --version and argument errors answer before Lightning and timm load",
    ("anomaly_kernels.cli", "anomaly_kernels.pipeline.inputs"):
        "--help, --version and argument errors answer before Lightning and timm load",
    ("anomaly_kernels.cli", "anomaly_kernels.bench"):
        "--help, --version and argument errors answer before the benchmark cases load",
    ("anomaly_kernels.cli", "anomaly_kernels.bench.gpu_compare"):
        "--help, --version and argument errors answer before the benchmark cases load",
    ("anomaly_kernels.cli", "anomaly_kernels.bench.distributed"):
        "--help, --version and argument errors answer before the benchmark cases load",
    ("anomaly_kernels.cli", "anomaly_kernels.deploy"):
        "--help, --version and argument errors answer before Lightning and timm load",
    ("anomaly_kernels.cli", "anomaly_kernels.deploy.predict"):
        "--help, --version and argument errors answer before Lightning and timm load",
    ("anomaly_kernels.deploy.inferencer", "onnxruntime"):
        "optional dependency: only ONNX models need ONNX Runtime",
    ("anomaly_kernels.pipeline.backbone_weights", "timm"):
        "inside the look-up's try: any failure to look means 'not cached'",
    ("anomaly_kernels.pipeline.backbone_weights", "huggingface_hub"):
        "inside the look-up's try: any failure to look means 'not cached'",
    ("anomaly_kernels.bench.cases", "cv2"):
        "optional: the OpenCV blur case exists only where OpenCV is installed",
}

# Imports inside functions that no reason above covers: each belongs at the top of its module.
# The list may only shrink: an entry that no longer matches an import fails the test.
NOT_YET_AT_MODULE_LEVEL: Set[Tuple[str, str]] = {
    ("anomaly_kernels.cli", "anomaly_kernels"),
    ("anomaly_kernels.data.datamodule", "anomaly_kernels.distributed"),
    ("anomaly_kernels.pipeline.fit", "anomaly_kernels.models.padim"),
    ("anomaly_kernels.pipeline.models", "anomaly_kernels.models"),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    deferred: bool  # inside a function or class body

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def discover(root: Path) -> Dict[str, Path]:
    """Module name -> file of every module of the package under ``root``."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(module: str, node: ast.ImportFrom, modules: Dict[str, Path]) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if modules[module].name == "__init__.py":
        parts.append("")  # a package's own level is itself
    base = parts[: len(parts) - node.level]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, modules: Dict[str, Path]) -> Iterator[Import]:
    """Every import of ``module``: one entry per imported module (a submodule when a name is one)."""
    tree = ast.parse(modules[module].read_text(), filename=str(modules[module]))

    def visit(node: ast.AST, deferred: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, deferred)
            elif isinstance(child, ast.ImportFrom):
                source = _resolve(module, child, modules)
                if source == "__future__":
                    continue
                for alias in child.names:
                    submodule = f"{source}.{alias.name}"
                    yield Import(module, submodule if submodule in modules else source, child.lineno, deferred)
            inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            yield from visit(child, inner)

    yield from visit(tree, False)


def layer_of(module: str) -> Optional[int]:
    """Index in :data:`LAYERS` of the longest prefix naming ``module``; ``None`` outside the package."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


MODULES: Dict[str, Path] = discover(SOURCE_ROOT)
ALL_IMPORTS: List[Import] = [found for module in MODULES for found in imports_of(module, MODULES)]


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []
    assert len(MODULES) > 50  # the walk found the package


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{found} (layer {LAYERS[layer_of(found.importer)][0]!r} imports layer {LAYERS[layer_of(found.imported)][0]!r})"
        for found in ALL_IMPORTS
        if _within(found.imported, PACKAGE)
        and layer_of(found.imported) > layer_of(found.importer)
        and found.imported != COMPATIBILITY_MODULES.get(found.importer)
        and (found.importer, found.imported) not in DEFERRED_FOR_A_REASON
    ]
    assert upward == []


def test_production_code_does_not_import_the_reference():
    offenders = [
        str(found) for found in ALL_IMPORTS
        if found.imported == REFERENCE and not any(_within(found.importer, user) for user in REFERENCE_USERS)
    ]
    assert offenders == []


def test_imports_inside_functions_are_listed_with_a_reason():
    unexplained = [
        str(found) for found in ALL_IMPORTS
        if found.deferred and not _deferred_import_is_listed(found.importer, found.imported)
    ]
    assert unexplained == [], "move these imports to the top of their module, or list them with a reason"


def _deferred_import_is_listed(importer: str, imported: str) -> bool:
    listed = set(DEFERRED_FOR_A_REASON) | NOT_YET_AT_MODULE_LEVEL
    # A third-party entry names the distribution's top-level package.
    return (importer, imported) in listed or (importer, imported.split(".")[0]) in listed


def test_every_listed_exception_still_matches_an_import():
    deferred = {(found.importer, found.imported) for found in ALL_IMPORTS if found.deferred}
    deferred |= {(found.importer, found.imported.split(".")[0]) for found in ALL_IMPORTS if found.deferred}
    stale = sorted((set(DEFERRED_FOR_A_REASON) | NOT_YET_AT_MODULE_LEVEL) - deferred)
    assert stale == [], "these imports moved to module level or went away: remove them from the lists"
    assert all(reason.strip() for reason in DEFERRED_FOR_A_REASON.values())


@pytest.mark.parametrize("old, new", sorted(COMPATIBILITY_MODULES.items()))
def test_compatibility_modules_only_re_export_their_new_home(old, new):
    tree = ast.parse(MODULES[old].read_text())
    body = tree.body[1:] if ast.get_docstring(tree) else tree.body
    for statement in body:
        is_all = isinstance(statement, ast.Assign) and [getattr(t, "id", None) for t in statement.targets] == ["__all__"]
        assert isinstance(statement, ast.ImportFrom) or is_all, f"{old} line {statement.lineno} is not a re-export"
    assert {_resolve(old, s, MODULES) for s in body if isinstance(s, ast.ImportFrom)} == {new}


def test_compatibility_paths_give_the_same_objects():
    assert base.AnomalyModule is AnomalyModule and models.OnePassAnomalyModule is OnePassAnomalyModule
    assert models.nearest_neighbors is nearest_neighbors
    moved = {
        **COMPATIBILITY_MODULES,
        "anomaly_kernels.models.one_pass_module": "anomaly_kernels.lightning.one_pass_module",
        "anomaly_kernels.models.nearest_neighbors": "anomaly_kernels.components.search.nearest_neighbors",
    }
    for old, new in moved.items():
        old_module, new_module = importlib.import_module(old), importlib.import_module(new)
        assert old_module.__all__, old
        assert all(getattr(old_module, name) is getattr(new_module, name) for name in old_module.__all__), old


def test_the_checks_catch_what_they_look_for(tmp_path):
    # A components module that imports models, the oracle, and Lightning inside a function.
    (tmp_path / PACKAGE / "components").mkdir(parents=True)
    for name in ("__init__.py", "reference.py"):
        (tmp_path / PACKAGE / name).write_text("")
    (tmp_path / PACKAGE / "components" / "__init__.py").write_text("from . import bad\n")
    (tmp_path / PACKAGE / "components" / "bad.py").write_text(
        "from anomaly_kernels import reference\nfrom ..models import patchcore\n\n"
        "def f():\n    import pytorch_lightning.strategies\n"
    )
    modules = discover(tmp_path)
    assert set(modules) == {
        "anomaly_kernels", "anomaly_kernels.reference", "anomaly_kernels.components", "anomaly_kernels.components.bad"
    }
    found = {(i.imported, i.deferred) for i in imports_of("anomaly_kernels.components.bad", modules)}
    assert found == {
        ("anomaly_kernels.reference", False), ("anomaly_kernels.models", False), ("pytorch_lightning.strategies", True)
    }
    assert [i.imported for i in imports_of("anomaly_kernels.components", modules)] == ["anomaly_kernels.components.bad"]
    assert layer_of("anomaly_kernels.models") > layer_of("anomaly_kernels.components.bad")
    assert layer_of("anomaly_kernels.reference") > layer_of("anomaly_kernels.components.bad")
    assert not _deferred_import_is_listed("anomaly_kernels.components.bad", "pytorch_lightning.strategies")


def test_components_other_than_the_feature_extractor_import_without_timm():
    # timm brings torchvision, which fails to load beside some torch builds (PyPI's torchvision
    # beside a CPU-only torch): the operators and every other component must not need it.
    code = (
        "import sys, anomaly_kernels.components as c, anomaly_kernels.reference;"
        "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules, 'timm loaded';"
        "c.FeatureExtractor; assert 'timm' in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
