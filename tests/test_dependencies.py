"""The third-party packages that src/vstain imports are the ones pyproject.toml declares: the
core imports only required dependencies (and the optional metric packages), the napari plugin
also the `napari` extra, and every declared package is imported somewhere."""

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vstain"
#: Distributions imported under another name.
IMPORT_NAMES = {
    "scikit-image": "skimage",
    "pillow": "PIL",
    "pytorch-fid": "pytorch_fid",
    "openslide-python": "openslide",
}
#: Declared for what they ship, not imported by vstain: openslide-python loads the library.
NOT_IMPORTED = {"openslide_bin"}


def import_name(requirement: str) -> str:
    """``scikit-image>=0.24`` -> ``skimage``; ``pytorch-fid>=0.3`` -> ``pytorch_fid``."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
    return IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))


def declared() -> dict[str, set[str]]:
    """Import names of the required dependencies and of the ``napari`` / ``metrics`` extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return {
        "required": {import_name(r) for r in project["dependencies"]},
        "napari": {import_name(r) for r in extras["napari"]},
        "metrics": {import_name(r) for r in extras["metrics"]},
    }


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-stdlib, non-vstain modules a file imports (anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "vstain"}


def imports_by_part() -> dict[str, set[str]]:
    """Third-party imports of the core (everything but vstain.napari) and of the plugin."""
    found = {"core": set(), "napari": set()}
    for path in SRC.rglob("*.py"):
        part = "napari" if path.relative_to(SRC).parts[0] == "napari" else "core"
        found[part] |= third_party_imports(path)
    return found


def test_the_core_imports_only_required_and_optional_metric_packages():
    deps, found = declared(), imports_by_part()
    undeclared = found["core"] - deps["required"] - deps["metrics"]
    assert not undeclared, f"declare {sorted(undeclared)} in pyproject.toml's dependencies"


def test_the_plugin_imports_only_declared_packages():
    deps, found = declared(), imports_by_part()
    undeclared = found["napari"] - deps["required"] - deps["napari"]
    assert not undeclared, f"declare {sorted(undeclared)} in the napari extra of pyproject.toml"


def test_every_declared_package_is_imported():
    deps, found = declared(), imports_by_part()
    unused = (deps["required"] | deps["metrics"]) - found["core"]
    unused |= deps["napari"] - found["napari"]
    unused -= NOT_IMPORTED
    assert not unused, f"{sorted(unused)} are declared but src/vstain never imports them"


def test_import_names_follow_the_distribution_names():
    assert import_name("scikit-image>=0.24") == "skimage"
    assert import_name("pytorch-fid>=0.3") == "pytorch_fid"
    assert import_name("PyQt6>=6.6") == "PyQt6" and import_name("Pillow") == "PIL"
    assert third_party_imports(SRC / "napari" / "hub.py") == {"psygnal"}
