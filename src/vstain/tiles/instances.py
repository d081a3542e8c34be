"""Object ids of an "instances" output, made whole across tile borders.

Each tile numbers its objects itself; `slide_ids` makes those ids unique over the slide (tile
grid index × tile² + local id), and `core_edges` keeps the tile's four border rows and columns
of those ids. An object cut by a tile border has one id on each side; `merged_ids` joins ids
that touch across a border, 4-connected as the tiles' own labelling, and names each object after
its smallest id. That choice depends only on the pixels, never on the order tiles were computed,
so resumed, cancelled-and-restarted and distributed runs give the same ids.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import relabel_sequential

#: Order of a tile's border strips in `core_edges`.
TOP, BOTTOM, LEFT, RIGHT = range(4)


def slide_ids(block: np.ndarray, index: tuple[int, int], size: int, columns: int) -> np.ndarray:
    """A tile's object ids made unique over the slide: renumbered 1..n within the tile, then
    offset by the tile's index in the grid times ``size``² (more ids than a core has pixels)."""
    ids = relabel_sequential(block)[0]
    row, col = index
    return np.where(ids > 0, ids + (row * columns + col) * size * size, 0)


def tile_of(ids: np.ndarray, size: int, columns: int) -> list[tuple[int, int]]:
    """Grid index (row, col) of the tile whose `slide_ids` gave each id."""
    flat = (np.asarray(ids) - 1) // (size * size)
    return [(int(i // columns), int(i % columns)) for i in flat]


def core_edges(block: np.ndarray, size: int) -> np.ndarray:
    """(1, h, w) ids of a tile core -> (4, size) ids along its top, bottom, left and right
    borders, zero-padded for the short cores at the slide's edge."""
    ids = block[0]
    edges = np.zeros((4, size), np.int64)
    edges[TOP, : ids.shape[1]] = ids[0]
    edges[BOTTOM, : ids.shape[1]] = ids[-1]
    edges[LEFT, : ids.shape[0]] = ids[:, 0]
    edges[RIGHT, : ids.shape[0]] = ids[:, -1]
    return edges


def border_pairs(edges, rows: int) -> np.ndarray:
    """(n, 2) distinct id pairs that touch across a tile border; ``edges`` is the
    (rows, cols, 4, size) array of `core_edges`, read one row of tiles at a time."""
    pairs, above = [], None
    for r in range(rows):
        row = np.asarray(edges[r])
        pairs.append(np.stack([row[:-1, RIGHT].ravel(), row[1:, LEFT].ravel()], axis=1))
        if above is not None:
            pairs.append(np.stack([above[:, BOTTOM].ravel(), row[:, TOP].ravel()], axis=1))
        above = row
    pairs = np.concatenate(pairs)
    return np.unique(pairs[(pairs > 0).all(axis=1)], axis=0)


def merged_ids(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids joined by ``pairs`` -> (ids, objects): each id that names part of an object with a
    smaller id, and that smallest id."""
    ids, nodes = np.unique(pairs, return_inverse=True)
    nodes = nodes.reshape(pairs.shape)
    graph = coo_matrix((np.ones(len(nodes)), (nodes[:, 0], nodes[:, 1])), (len(ids), len(ids)))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1 if len(ids) else 0, np.iinfo(np.int64).max)
    np.minimum.at(smallest, component, ids)
    objects = smallest[component]
    moved = objects != ids
    return ids[moved], objects[moved]


def relabel(block: np.ndarray, ids: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """``block`` with every id in ``ids`` (sorted, not empty) replaced by its object's id."""
    at = np.minimum(np.searchsorted(ids, block), len(ids) - 1)
    return np.where(ids[at] == block, objects[at], block)
