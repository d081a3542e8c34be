"""Reading PNG and JPEG: colour modes, decoding once and only when read, lazy pyramids."""

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from tests.io.builders import rgb_image
from vstain.errors import SlideError
from vstain.io import downsample_2x, open_slide, plain_reader


@pytest.fixture
def decode_calls(monkeypatch):
    """Count whole-image decodes done by the plain reader."""
    calls = []
    for kind, decode in list(plain_reader.DECODERS.items()):

        def counted(data, _decode=decode, _kind=kind):
            calls.append(_kind)
            return _decode(data)

        monkeypatch.setitem(plain_reader.DECODERS, kind, counted)
    return calls


def test_png_rgb_reads_exactly(tmp_path):
    image = rgb_image(90, 120)
    path = tmp_path / "tile.png"
    Image.fromarray(image).save(path)
    slide = open_slide(path)
    assert slide.metadata["format"] == "png"
    assert slide.pixel_size is None
    assert len(slide.levels) == 1
    np.testing.assert_array_equal(slide.levels[0].compute(), image)


def test_jpeg_reads_close_to_original(tmp_path):
    y, x = np.mgrid[0:64, 0:96]
    image = np.stack([x * 2, y * 3, x + y], axis=-1).astype(np.uint8)
    path = tmp_path / "tile.jpg"
    Image.fromarray(image).save(path, quality=95)
    out = open_slide(path).levels[0].compute()
    assert out.shape == image.shape
    error = np.abs(out.astype(int) - image)
    assert error.max() <= 6
    assert error.mean() < 1.5


def test_png_rgba_drops_alpha_and_palette_uses_colours(tmp_path):
    image = rgb_image(40, 50)
    Image.fromarray(np.dstack([image, np.zeros(image.shape[:2], np.uint8)])).save(
        tmp_path / "a.png"
    )
    np.testing.assert_array_equal(open_slide(tmp_path / "a.png").levels[0].compute(), image)

    palette_image = Image.fromarray(image).quantize(16)
    palette_image.save(tmp_path / "p.png")
    expected = np.asarray(palette_image.convert("RGB"))
    np.testing.assert_array_equal(open_slide(tmp_path / "p.png").levels[0].compute(), expected)


def test_16_bit_png_divides_by_257(tmp_path):
    image = rgb_image(30, 40).astype(np.uint16) * 257 + 100
    (tmp_path / "deep.png").write_bytes(imagecodecs.png_encode(image))
    out = open_slide(tmp_path / "deep.png").levels[0].compute()
    np.testing.assert_array_equal(out, ((image.astype(np.uint32) + 128) // 257).astype(np.uint8))


@pytest.mark.parametrize(
    ("mode", "name"), [("L", "gray.png"), ("LA", "gray_alpha.png"), ("L", "gray.jpg")]
)
def test_grayscale_images_are_refused(tmp_path, mode, name):
    Image.fromarray(rgb_image(20, 20)).convert(mode).save(tmp_path / name)
    with pytest.raises(SlideError, match=name.replace(".", r"\.") + " is a grayscale"):
        open_slide(tmp_path / name)


def test_cmyk_jpeg_is_refused(tmp_path):
    Image.fromarray(rgb_image(20, 20)).convert("CMYK").save(tmp_path / "print.jpg")
    with pytest.raises(SlideError, match=r"print\.jpg is a JPEG in colour mode CMYK"):
        open_slide(tmp_path / "print.jpg")


def test_corrupt_png_header_is_refused(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(SlideError, match=r"broken\.png cannot be read as PNG"):
        open_slide(path)


def test_truncated_png_fails_when_read(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(rgb_image(200, 200)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    slide = open_slide(path)  # the header is intact; pixels are only decoded when read
    with pytest.raises(SlideError, match=r"Cannot decode pixels of .*cut\.png"):
        slide.read_region(0, 0, 10, 10)


def test_large_png_opens_without_decoding_and_decodes_once(tmp_path, decode_calls):
    path = tmp_path / "big.png"
    image = np.zeros((5000, 5000, 3), np.uint8)
    image[2500:, :, 1] = 255
    path.write_bytes(imagecodecs.png_encode(image, level=1))

    slide = open_slide(path)

    assert decode_calls == []
    assert slide.shape == (5000, 5000)
    assert [lvl.shape[:2] for lvl in slide.levels][-1] == (313, 313)
    assert slide.levels[0].numblocks == (5, 5, 1)
    assert slide.read_region(10, 2490, 4, 20)[:, 0, 1].tolist() == [0] * 10 + [255] * 10
    assert slide.read_region(4000, 4000, 8, 8, level=0).max() == 255
    assert slide.read_region(0, 0, 313, 313, level=4).shape == (313, 313, 3)
    assert decode_calls == ["png"]


def test_lazy_pyramid_above_4096_px(tmp_path):
    image = rgb_image(300, 4100)
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path, compress_level=1)

    slide = open_slide(path)

    shapes = [lvl.shape[:2] for lvl in slide.levels]
    assert shapes == [(300, 4100), (150, 2050), (75, 1025), (38, 513), (19, 257)]
    assert slide.metadata["computed_levels"] == 4
    assert slide.downsamples[1] == 2.0
    expected = image
    for level in slide.levels[1:]:
        expected = downsample_2x(expected, channel_axis=-1)
        np.testing.assert_array_equal(level.compute(), expected)


def test_images_up_to_4096_px_get_no_computed_levels(tmp_path):
    path = tmp_path / "edge.png"
    Image.fromarray(rgb_image(20, 4096)).save(path, compress_level=1)
    assert len(open_slide(path).levels) == 1
