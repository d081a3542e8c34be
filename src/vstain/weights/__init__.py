"""Checkpoints shipped inside the package (demo weights trained on simulated tissue)."""

from __future__ import annotations

from pathlib import Path

from vstain.errors import VstainError

WEIGHTS_DIR = Path(__file__).parent


def shipped_checkpoints() -> dict[str, Path]:
    """Shipped name -> checkpoint file in this folder.

    A file is ``<registry name>.safetensors``, or ``<registry name>-<marker>.safetensors`` for
    a further marker of the same architecture (``stain-diffuser-cd3``).
    """
    return {
        p.name.removesuffix(".safetensors"): p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))
    }


def resolve_checkpoint(model: str) -> Path:
    """A checkpoint path, or the shipped checkpoint of a registry name."""
    path = Path(model).expanduser()
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise VstainError(f"Checkpoint {path} {problem}. Give the path of a .safetensors file.")
        return path
    shipped = shipped_checkpoints()
    if model in shipped:
        return shipped[model]
    known = ", ".join(shipped) or "none yet"
    raise VstainError(
        f"No trained weights for model {model!r}: shipped checkpoints are {known}. "
        "Give the path of a .safetensors checkpoint, or train one with `vstain train`."
    )


def check_writable_checkpoint(model: str) -> Path:
    """The checkpoint of ``model`` if vstain may rewrite it: shipped weights are read-only."""
    path = resolve_checkpoint(model)
    if path.resolve().parent == WEIGHTS_DIR.resolve():
        raise VstainError(
            f"{model} is a checkpoint shipped with vstain, which vstain never changes. Copy it "
            f"(cp {path} my-{path.name}) and give the copy's path."
        )
    return path
