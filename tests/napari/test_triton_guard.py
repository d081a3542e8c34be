"""torch must not load Triton after napari's software OpenGL (Mesa's LLVM): that segfaults."""

import subprocess
import sys

import pytest

from vstain.triton_guard import mesa_llvm_loaded

pytestmark = pytest.mark.gui

VIEWER = """
import napari
viewer = napari.Viewer(show=False)
viewer.add_image(__import__("numpy").zeros((8, 8)))
viewer.screenshot()
"""
MODELS = """
import vstain.models
from vstain.models.perceptual import vgg16_features
vstain.models.create("pix2pix")  # the meta-device build: torch._refs imports torch._dynamo
vstain.models.create("implicit-stainer")  # imports torchvision, which imports torch._dynamo
vgg16_features()
print("alive", "triton" in __import__("sys").modules)
"""
# vstain imported before the viewer (the CLI, a user's script): Mesa loads after the import-time
# guard ran, so each path into torch._dynamo must check again.
IMPORTED_FIRST = "import vstain.models\n" + VIEWER + MODELS


@pytest.mark.parametrize("script", [VIEWER + MODELS, IMPORTED_FIRST], ids=["after", "before"])
def test_models_load_after_a_viewer_without_crashing(script):
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alive" in done.stdout


def test_mesa_llvm_is_recognised_from_the_memory_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f89-7f8a r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    assert mesa_llvm_loaded(maps)
    maps.write_text("7f89-7f8a r-xp 0 08:01 1 /usr/lib/libc.so.6\n")
    assert not mesa_llvm_loaded(maps)
    assert not mesa_llvm_loaded(tmp_path / "missing")
