"""Small slide files for the io tests, written with tifffile / zarr / imagecodecs."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import tifffile
import zarr

APERIO = "Aperio Image Library v12.0.15\n"


def rgb_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise, (height, width, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // max(width, 1), y * 200 // max(height, 1), (x + y) % 97], axis=-1)
    return (base + rng.integers(0, 50, base.shape)).clip(0, 255).astype(np.uint8)


def write_svs(
    path: Path,
    levels: list[np.ndarray],
    tile: int = 128,
    mpp: float = 0.252,
    compression: str = "deflate",
) -> None:
    """Aperio-style SVS: tiled level 0 with the Aperio description, a stripped thumbnail, then
    the other levels as tiled pages, as a scanner writes them."""
    h, w = levels[0].shape[:2]
    options = {"photometric": "rgb", "compression": compression, "metadata": None}
    with tifffile.TiffWriter(path) as tiff:
        description = f"{APERIO}{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) RGB|AppMag = 40|MPP = {mpp}"
        tiff.write(levels[0], tile=(tile, tile), description=description, **options)
        tiff.write(levels[-1][::2, ::2], description=f"{APERIO}thumbnail", **options)
        for level in levels[1:]:
            tiff.write(level, tile=(tile, tile), description=f"{APERIO}level", **options)


def write_ome_tiff_subifds(
    path: Path, levels: list[np.ndarray], physical_size: float | None, unit: str = "µm"
) -> None:
    """OME-TIFF with the levels after the first in SubIFDs (as bfconvert writes them)."""
    metadata: dict = {"axes": "YXS"}
    if physical_size is not None:
        metadata.update(PhysicalSizeX=physical_size, PhysicalSizeXUnit=unit)
        metadata.update(PhysicalSizeY=physical_size, PhysicalSizeYUnit=unit)
    options = {"photometric": "rgb", "compression": "deflate", "tile": (64, 64)}
    with tifffile.TiffWriter(path, ome=True) as tiff:
        tiff.write(levels[0], subifds=len(levels) - 1, metadata=metadata, **options)
        for level in levels[1:]:
            tiff.write(level, subfiletype=1, metadata=None, **options)


def write_ngff(
    path: Path,
    levels: list[np.ndarray],
    axes: list[dict],
    scale0: list[float],
    zarr_format: int = 3,
    chunk: int = 64,
) -> list[zarr.Array]:
    """OME-Zarr image with arrays laid out as ``axes``: NGFF 0.5 on zarr v3, 0.4 on zarr v2."""
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    datasets, arrays = [], []
    for k, level in enumerate(levels):
        scale = [s * 2**k if a["type"] == "space" else s for s, a in zip(scale0, axes, strict=True)]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
        chunks = tuple(
            chunk if a["type"] == "space" else n for a, n in zip(axes, level.shape, strict=True)
        )
        arrays.append(group.create_array(str(k), data=level, chunks=chunks))
    multiscale = {"axes": axes, "datasets": datasets, "name": "test"}
    if zarr_format == 3:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    return arrays


def axes(order: str, unit: str | None = "micrometer") -> list[dict]:
    """NGFF axes metadata for an order like "cyx" or "yxc"."""
    types = {"c": "channel", "t": "time", "z": "space", "y": "space", "x": "space"}
    with_unit = {"unit": unit} if unit else {}
    return [{"name": a, "type": types[a], **(with_unit if a in "zyx" else {})} for a in order]


def truncate(path: Path, fraction: float = 0.5) -> None:
    """Cut ``path`` to ``fraction`` of its size, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def lazy_pattern(height: int, width: int, chunk: int = 512):
    """A (height, width, 3) uint8 dask array computed block by block from pixel coordinates,
    so nothing exists in memory until a block is read."""
    import dask.array as da

    def block(block_info=None):
        (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
        y = np.arange(y0, y1, dtype=np.int32)[:, None]
        x = np.arange(x0, x1, dtype=np.int32)[None, :]
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        out[..., 0] = x % 251
        out[..., 1] = y % 241
        out[..., 2] = (x // 7 + y // 5) % 256
        return out

    chunks = (_split(height, chunk), _split(width, chunk), (3,))
    return da.map_blocks(block, chunks=chunks, dtype=np.uint8)


def pattern(height: int, width: int) -> np.ndarray:
    """The pixels of `lazy_pattern`, in memory."""
    return lazy_pattern(height, width).compute()


def _split(n: int, chunk: int) -> tuple[int, ...]:
    return (chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ())


def peak_memory(function, *args, **kwargs) -> int:
    """Peak bytes of traced allocations while ``function(*args, **kwargs)`` runs."""
    tracemalloc.start()
    try:
        function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_levels_are_pyramid_of(slide, image, n_levels: int) -> None:
    """``slide`` has ``n_levels`` levels: ``image`` and its repeated 2x mean downsamplings."""
    from vstain.io import downsample_2x

    expected = [image]
    for _ in range(n_levels - 1):
        expected.append(downsample_2x(expected[-1], channel_axis=-1))
    assert [lvl.shape for lvl in slide.levels] == [e.shape for e in expected]
    for ours, exp in zip(slide.levels, expected, strict=True):
        np.testing.assert_array_equal(ours.compute(), exp)


def write_synth_pair(folder: Path, size: int, seed: int) -> list[Path]:
    """A simulated same-section CK8/18 H&E / IHC pair at 0.5 um/px as deflate OME-TIFFs."""
    from vstain.io import write_ome_tiff
    from vstain.io.slide import Slide
    from vstain.synth import synth_slide

    synth = synth_slide("ck818", size=size, seed=seed)
    paths = []
    for name, array in (("he", synth.he), ("ihc", synth.ihc)):
        path = folder / f"{name}.ome.tif"
        write_ome_tiff(Slide(path, [array], 0.5), path, pixel_size=0.5, compression="deflate")
        paths.append(path)
    return paths


def write_dicom_wsi(folder: Path, levels: list[np.ndarray], tile: int, pixel_size: float) -> None:
    """A DICOM VL Whole Slide Microscopy series, one file per level (``level<k>.dcm``):
    TILED_FULL frames of ``tile`` px, uncompressed RGB, white padding; ``pixel_size`` in um."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    wsi = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(levels):
        h, w = image.shape[:2]
        rows, cols = -(-h // tile), -(-w // tile)
        padded = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
        padded[:h, :w] = image
        frames = padded.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4)
        spacing = pixel_size / 1000 * levels[0].shape[1] / w  # mm per pixel of this level
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = wsi
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.Modality, ds.InstanceNumber = frame_of_reference, "SM", k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
        ds.TotalPixelMatrixFocalPlanes = 1
        ds.Rows = ds.Columns = tile
        ds.NumberOfFrames = rows * cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = w * spacing, h * spacing
        ds.ImagedVolumeDepth = 0.001
        measures = Dataset()
        measures.PixelSpacing, measures.SliceThickness = [spacing, spacing], 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        optical_path = Dataset()
        optical_path.OpticalPathIdentifier = "1"
        ds.OpticalPathSequence, ds.NumberOfOpticalPaths = [optical_path], 1
        ds.PixelData = frames.tobytes()
        ds.save_as(folder / f"level{k}.dcm", enforce_file_format=True)


def set_tiff_tag(path: Path, name: str, value: int, page: int = 0, index: int = 0) -> None:
    """Overwrite value ``index`` of tag ``name`` of ``page`` in place, as a corrupt or hostile
    header would state it."""
    import struct

    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page].tags[name]
        code = tifffile.DATATYPE(tag.dtype).name
        fmt = tif.byteorder + {"SHORT": "H", "LONG": "I", "LONG8": "Q"}[code]
    with open(path, "r+b") as f:
        f.seek(tag.valueoffset + index * struct.calcsize(fmt))
        f.write(struct.pack(fmt, value))


def set_png_size(path: Path, width: int, height: int) -> None:
    """Rewrite a PNG's IHDR width and height (with a valid CRC, so readers believe it)."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # after signature, length and b"IHDR"
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def set_jpeg_size(path: Path, width: int, height: int) -> None:
    """Rewrite the size in a baseline JPEG's start-of-frame (SOF0) segment."""
    import struct

    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
