"""Atomic writes: the umask decides the mode; a failed write leaves the target as it was."""

import os
import stat

import pytest

from vstain.io.atomic import write_atomically, write_text_atomically
from vstain.models import create, save_checkpoint


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_mode_the_umask_gives(tmp_path, umask_022):
    text = write_text_atomically(tmp_path / "a.json", "{}")
    checkpoint = save_checkpoint(create("pix2pix"), tmp_path / "m.safetensors")
    for path in (text, checkpoint):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = write_text_atomically(tmp_path / "keep.txt", "old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
