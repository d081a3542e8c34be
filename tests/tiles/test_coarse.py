"""Coarse pyramid chunks are written once, when their last tile arrives (or when they wait too
long, or the held chunks pass their budget)."""

import numpy as np

import vstain.tiles.coarse as coarse
from vstain.tiles.coarse import CoarseChunks


def _held(written):
    return CoarseChunks(
        read=lambda key: np.zeros((1, 4, 4), np.uint8),
        write=lambda key, chunk: written.append((key, chunk.copy())),
    )


def test_a_chunk_is_written_once_when_complete():
    written = []
    chunks = _held(written)
    chunks.expect([("a", 1, 0, 0)] * 4)
    for i, (y, x) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        chunks.add(("a", 1, 0, 0), [(y, x, np.full((1, 2, 2), i + 1, np.uint8))], (0, 0))
        chunks.write_due()
        assert chunks.is_dirty(("a", 1, 0, 0)) == (i < 3)
    assert len(written) == 1
    np.testing.assert_array_equal(written[0][1][0], [[1, 1, 2, 2]] * 2 + [[3, 3, 4, 4]] * 2)


def test_incomplete_chunks_wait_until_forced_old_or_over_budget(monkeypatch):
    written = []
    chunks = _held(written)
    chunks.add(("a", 1, 0, 0), [(0, 0, np.ones((1, 2, 2), np.uint8))], (0, 0))
    chunks.write_due()
    assert not written
    chunks.write_due(force=True)
    assert len(written) == 1 and not chunks.is_dirty(("a", 1, 0, 0))

    chunks.add(("a", 1, 0, 0), [(2, 2, np.ones((1, 2, 2), np.uint8))], (0, 0))
    now = coarse.time.monotonic()
    monkeypatch.setattr(coarse.time, "monotonic", lambda: now + coarse.MAX_WAIT_SECONDS)
    chunks.write_due()
    assert len(written) == 2 and written[1][1].sum() == 8  # the cached chunk kept both shares

    monkeypatch.setattr(coarse, "MAX_BYTES", 16)  # one 4 x 4 chunk
    monkeypatch.setattr(coarse.time, "monotonic", lambda: now)
    for col in (1, 2):
        chunks.add(("a", 1, 0, col), [(0, 0, np.ones((1, 2, 2), np.uint8))], (0, 0))
    chunks.write_due()
    assert [key for key, _ in written[2:]] == [("a", 1, 0, 1)]  # oldest dirty one, to fit
