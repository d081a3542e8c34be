"""The layer order of docs/architecture.md holds: each package imports only packages below it, and
nothing outside ``vstain.napari`` imports napari or Qt."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vstain"

#: Bottom first. A package may import its own modules and packages of lower layers only.
LAYERS = [
    {"errors", "triton_guard"},
    {"__init__"},  # vstain itself: the version and VstainError
    {"io"},
    {"color"},
    {"synth", "tiles", "metrics", "weights"},
    {"models"},
    {"train", "registration"},
    {"review", "pipeline"},
    {"batch"},
    {"napari"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "vispy")
CORE = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())
CORE = [name for name in CORE if name != "napari"]


def package_of(module: str) -> str:
    """``vstain.io.readers`` -> ``io``; a top-level module (``vstain.cli``) is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str) -> list[str]:
    """Every module an ``import`` or ``from ... import`` in ``source`` names (absolute only)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "vstain":
            names += [f"vstain.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def violations(module: str, source: str) -> list[str]:
    """Imports of ``module`` (dotted name, source text) that break the layer order."""
    own = package_of(module)
    found = []
    for name in imported_modules(source):
        top = name.split(".")[0]
        if top in GUI and own != "napari":
            found.append(f"{module} imports {name} (only vstain.napari may use napari / Qt)")
        if top != "vstain":
            continue
        target = package_of(name) if package_of(name) in RANK else "__init__"
        if target != own and RANK[target] >= RANK[own]:
            found.append(f"{module} imports {name}: {target} is not below {own}")
    return found


def source_modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path.read_text()


def test_every_package_has_a_layer():
    packages = {package_of(m) for m, _ in source_modules()} | {"__init__"}
    assert packages <= set(RANK), f"add {packages - set(RANK)} to LAYERS and docs/architecture.md"


def test_no_module_imports_a_layer_above_it():
    found = [v for module, source in source_modules() for v in violations(module, source)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "module, source",
    [
        ("vstain.models.k_stain", "from vstain.train.trainer import train"),
        ("vstain.metrics.image", "import vstain.models"),
        ("vstain.io.readers", "from vstain.color import dab_od"),
        ("vstain.registration.flow", "from vstain.review import region_pair"),
        ("vstain.tiles.engine", "from qtpy.QtCore import QTimer"),
        ("vstain.pipeline.plan", "import napari"),
        ("vstain.synth.render", "from vstain.tiles import TileGrid"),  # peers do not import
    ],
)
def test_an_upward_or_gui_import_is_caught(module, source):
    assert violations(module, source)


def test_downward_imports_pass():
    assert not violations("vstain.napari.stain_job", "from vstain.pipeline import plan_run")
    assert not violations("vstain.train.trainer", "from vstain.models import create\nimport torch")


def test_core_packages_import_without_napari_or_qt():
    """Each core package imports with napari and every Qt binding made unimportable."""
    blocked = ", ".join(repr(name) for name in GUI)
    code = (
        "import sys\n"
        f"for name in ({blocked},):\n"
        "    sys.modules[name] = None\n"
        f"for package in {CORE!r} + ['cli']:\n"
        "    __import__('vstain.' + package)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_staining_does_not_import_torchvision():
    """torchvision (with torch._dynamo and sympy, about 160 MiB) loads only for the models and
    losses that use it, not for the engine, the planner or the command line."""
    code = (
        "import sys, vstain.pipeline, vstain.batch, vstain.cli, vstain.models\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "vstain.models.create('implicit-stainer')\n"
        "assert 'torchvision' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
