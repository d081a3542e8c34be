"""Adjacent sections: the returned transform is the truth, cells differ, tiles still agree."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from vstain.synth import SectionTransform, make_spec, render_ihc, render_tile

from .conftest import tissue_origin


@pytest.fixture(scope="module")
def adjacent():
    return make_spec(5, "ck818", 2048, mode="adjacent-section")


def _centroids(labels: np.ndarray, x0: int, y0: int) -> dict[int, tuple[float, float]]:
    ids = np.unique(labels[labels > 0])
    rows_cols = ndi.center_of_mass(np.ones_like(labels), labels, ids)
    return {int(i): (c + x0, r + y0) for i, (r, c) in zip(ids, rows_cols, strict=True)}


def test_transform_maps_he_nuclei_onto_ihc_nuclei(adjacent):
    x, y = tissue_origin(adjacent, 512)
    tr = SectionTransform.from_spec(adjacent)
    qx, qy = tr.he_to_ihc(np.array(x + 256.0), np.array(y + 256.0))
    t = render_tile(
        adjacent, x, y, 512, 512, ihc_origin=(round(float(qx)) - 256, round(float(qy)) - 256)
    )
    he = _centroids(t.he_truth.nuclei, t.x, t.y)
    ihc = _centroids(t.ihc_truth.nuclei, t.ihc_x, t.ihc_y)
    # Cells cut at the tile border have shifted centroids: keep those well inside both tiles.
    both = [
        i
        for i in he
        if i in ihc
        and min(he[i][0] - t.x, he[i][1] - t.y, t.x + 512 - he[i][0], t.y + 512 - he[i][1]) > 12
        and min(
            ihc[i][0] - t.ihc_x,
            ihc[i][1] - t.ihc_y,
            t.ihc_x + 512 - ihc[i][0],
            t.ihc_y + 512 - ihc[i][1],
        )
        > 12
    ]
    a = np.array([he[i] for i in both])
    b = np.array([ihc[i] for i in both])
    mx, my = tr.he_to_ihc(a[:, 0], a[:, 1])
    error = np.hypot(mx - b[:, 0], my - b[:, 1])
    unregistered = np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1])
    print(
        f"\n{len(both)} nuclei in both sections: median error {np.median(error):.2f} px with the "
        f"true transform, {np.median(unregistered):.1f} px without"
    )
    assert len(both) > 100
    assert np.median(error) < 1.5
    assert np.median(unregistered) > 5 * np.median(error)


def test_transform_parts_and_inverse(adjacent):
    tr = SectionTransform.from_spec(adjacent)
    s = adjacent.sectioning
    a = tr.affine[:2, :2]
    assert np.isclose(np.sqrt(abs(np.linalg.det(a))), s.scale)
    assert np.isclose(np.degrees(np.arctan2(a[1, 0], a[0, 0])), s.rotation_deg)
    x = np.array([10.0, 700.5, 2000.0])
    y = np.array([1500.0, 3.25, 999.0])
    qx, qy = tr.he_to_ihc(x, y)
    hx, hy = tr.ihc_to_he(qx, qy)
    np.testing.assert_allclose(hx, x, atol=1e-3)
    np.testing.assert_allclose(hy, y, atol=1e-3)
    # The elastic part is a smooth displacement of about the requested size.
    ux, uy = tr.displacement_grid(0, 0, 512, 512)
    size = np.hypot(ux, uy)
    assert 0.2 < size.mean() / (s.elastic_um / adjacent.pixel_size) < 3
    assert np.abs(np.diff(ux, axis=1)).max() < 0.1  # smooth: < 0.1 px change per px


def test_cells_missing_and_new_in_the_ihc_section(adjacent):
    x, y = tissue_origin(adjacent, 512)
    cells = render_tile(adjacent, x, y, 512, 512).cells
    in_he = cells.in_he.sum()
    missing = np.sum(cells.in_he & ~cells.in_ihc) / in_he
    new = np.sum(~cells.in_he & cells.in_ihc) / in_he
    s = adjacent.sectioning
    print(f"\nmissing {missing:.3f} (spec {s.missing:.3f}), new {new:.3f} (spec {s.new:.3f})")
    assert abs(missing - s.missing) < 0.05
    assert abs(new - s.new) < 0.08


def test_adjacent_ihc_tiles_agree_across_borders(adjacent):
    x, y = tissue_origin(adjacent, 512)
    whole = render_ihc(adjacent, x, y, 512, 256)
    np.testing.assert_array_equal(render_ihc(adjacent, x, y, 256, 256), whole[:, :256])
    np.testing.assert_array_equal(render_ihc(adjacent, x + 256, y, 256, 256), whole[:, 256:])


def test_same_section_pairs_share_truth(spec):
    x, y = tissue_origin(spec, 256)
    t = render_tile(spec, x, y, 256, 256)
    assert t.transform is None
    np.testing.assert_array_equal(t.he_truth.nuclei, t.ihc_truth.nuclei)
    np.testing.assert_array_equal(t.cells.in_he, t.cells.in_ihc)
    np.testing.assert_array_equal(t.cells.x, t.cells.ihc_x)


def test_aligned_ihc_stains_the_he_section(adjacent):
    """section="he" paints the marker on the H&E's own cells: its DAB follows the H&E truth."""
    from vstain.color import dab_od

    x, y = tissue_origin(adjacent, 256)
    pair = render_tile(adjacent, x, y, 256, 256, aligned_ihc=True)
    aligned = render_ihc(adjacent, x, y, 256, 256, section="he")
    np.testing.assert_array_equal(pair.ihc_aligned, aligned)  # one rendering, two entry points
    truth = pair.he_truth.dab.ravel()

    def corr(image):
        return np.corrcoef(dab_od(image).ravel(), truth)[0, 1]

    assert aligned.shape == pair.he.shape and aligned.dtype == np.uint8
    assert corr(aligned) > 0.8 > corr(pair.ihc) + 0.2


def test_aligned_ihc_is_the_ihc_in_same_section_mode():
    spec = make_spec(5, "ck818", 1024)
    x, y = tissue_origin(spec, 128)
    np.testing.assert_array_equal(
        render_ihc(spec, x, y, 128, 128, section="he"), render_ihc(spec, x, y, 128, 128)
    )
