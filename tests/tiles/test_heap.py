"""Freed heap memory goes back to the OS after a trim (glibc)."""

import threading
from pathlib import Path

import pytest

from vstain.tiles import heap


def _anon_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssAnon:")[1].split()[0]) / 1024


@pytest.mark.skipif(heap._TRIM is None, reason="malloc_trim is glibc's")
def test_trim_returns_memory_a_thread_freed():
    held = []

    def fragment():  # 300 MiB in 96 KiB blocks (below mmap's threshold), all freed but the last
        blocks = [bytearray(96 * 1024) for _ in range(3200)]
        held.append(blocks.pop())
        del blocks

    thread = threading.Thread(target=fragment)
    thread.start()
    thread.join()
    before = _anon_rss_mib()
    assert heap.release_free_memory()
    assert before - _anon_rss_mib() > 200
