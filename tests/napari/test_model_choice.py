"""Checkpoint descriptions and view geometry (no display needed)."""

from vstain.models import read_card
from vstain.napari.model_choice import (
    SIMULATED,
    UNTRAINED,
    card_summary,
    card_warning,
    layer_prefix,
)
from vstain.napari.viewport import tiles_in_view
from vstain.tiles import TileGrid
from vstain.weights import shipped_checkpoints


def test_untrained_and_demo_weights_are_flagged(checkpoint):
    card = read_card(checkpoint)
    assert card_warning(card) == UNTRAINED
    for name, path in shipped_checkpoints().items():
        shipped = read_card(path)
        assert card_warning(shipped) == SIMULATED, name
        summary = card_summary(shipped)
        assert f"Training steps: {shipped.steps}" in summary
        assert f"Tile: {shipped.tile_size} px" in summary
        assert "simulated tissue" in summary
    assert layer_prefix("tiny", card) == "tiny ck818"
    assert layer_prefix("tiny-ck818", card) == "tiny-ck818"


def test_tiles_in_view_compares_at_the_model_level():
    grid = TileGrid((512, 512), 128)
    corner, far = grid.tile_at(0, 0), grid.tile_at(3, 3)
    assert tiles_in_view([corner], (0, 0, 100, 100), 1)
    assert not tiles_in_view([far], (0, 0, 100, 100), 1)
    assert not tiles_in_view([far], (0, 0, 700, 700), 2)  # level-1 px 0..350 miss 384..512
    assert tiles_in_view([corner, far], (800, 800, 100, 100), 2)
    assert not tiles_in_view([], (0, 0, 512, 512), 1)
