"""Files written atomically: a temporary file beside the target (created with the user's umask),
flushed to disk, then renamed over the target; an interrupted write leaves the target as it was."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then make it ``path`` durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # mode from the umask
    mode = tmp.stat().st_mode
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors) make it 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_text_atomically(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_atomically(source, target) -> Path:
    """Copy the file ``source`` to ``target`` atomically."""
    return write_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
