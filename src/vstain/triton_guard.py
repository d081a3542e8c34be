"""Keep torch from loading Triton into a process that already runs Mesa's software OpenGL.

Triton bundles its own LLVM; loaded after Mesa's llvmpipe has mapped the system libLLVM (napari
drawing without a GPU: Xvfb, VMs, remote desktops) it crashes the process (segmentation fault,
seen here with torch 2.14 + Mesa 22). torch imports Triton as soon as torchvision is imported.
vstain never compiles kernels (no ``torch.compile``), so in exactly that situation Triton is
marked unavailable (``import triton`` raises ImportError) and torch carries on without it.
Importing this module applies the guard. torchvision pulls in torch._dynamo and sympy (about
160 MiB), so vstain imports it only inside the functions that use it, each calling
`guard_triton` first (the plugin may have started Mesa since this module was imported). The
meta-device build that checks a config's memory calls it too: initialising meta tensors runs
torch._refs, which imports torch._dynamo, so a script that imports vstain and then opens napari
crashed at its first model.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def mesa_llvm_loaded(maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether this process has the system libLLVM mapped (Linux; False elsewhere)."""
    try:
        return "/libLLVM" in maps.read_text()
    except OSError:
        return False


def guard_triton() -> bool:
    """Mark Triton unavailable when Mesa's LLVM is loaded and Triton is not yet; True if so."""
    if "triton" in sys.modules or not mesa_llvm_loaded():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
    log.info("Mesa's LLVM is loaded (software OpenGL): torch will run without Triton.")
    return True


guard_triton()
