"""Seed files of every input kind and seeded mutations of them: truncated, byte-flipped and
header-tampered copies, each in a folder of its own."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from tests.io.builders import (
    axes,
    rgb_image,
    write_ngff,
    write_ome_tiff_subifds,
    write_svs,
)

#: Values a hostile header or JSON field may hold.
HOSTILE_JSON = [None, -1, 0, 10**12, 1e308, float("nan"), float("inf"), "x", [], {}, True, [0.5]]
HOSTILE_INTS = [0, 1, 3, 7, 255, 65535, 10**6, 2**31 - 1, 2**32 - 1]
DEEP = "[" * 100_000 + "]" * 100_000
TIFF_TAGS = [
    "ImageWidth",
    "ImageLength",
    "TileWidth",
    "TileLength",
    "RowsPerStrip",
    "TileOffsets",
    "TileByteCounts",
    "StripOffsets",
    "StripByteCounts",
    "SamplesPerPixel",
    "BitsPerSample",
    "Compression",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "SubIFDs",
    "SampleFormat",
]


def seeds(folder: Path) -> dict[str, Path]:
    """One valid file (or store) per input kind, named by kind."""
    folder.mkdir(parents=True)
    image = rgb_image(192, 256)
    paths = {
        "svs": folder / "s.svs",
        "ome-tiff": folder / "s.ome.tif",
        "strips": folder / "s.tif",
        "png": folder / "s.png",
        "jpeg": folder / "s.jpg",
        "ngff": folder / "s.zarr",
        "ngff-v2": folder / "s2.zarr",
        "safetensors": folder / "s.safetensors",
        "geojson": folder / "s.geojson",
    }
    write_svs(paths["svs"], [image, image[::2, ::2]], tile=64, compression="jpeg")
    write_ome_tiff_subifds(paths["ome-tiff"], [image, image[::2, ::2]], 0.5)
    tifffile.imwrite(paths["strips"], image, photometric="rgb", rowsperstrip=16, compression="lzw")
    paths["png"].write_bytes(imagecodecs.png_encode(image))
    paths["jpeg"].write_bytes(imagecodecs.jpeg8_encode(image))
    cyx = np.moveaxis(image, -1, 0)
    for kind, version in (("ngff", 3), ("ngff-v2", 2)):
        write_ngff(paths[kind], [cyx, cyx[:, ::2, ::2]], axes("cyx"), [1, 0.5, 0.5], version, 128)
    _checkpoint(paths["safetensors"])
    _regions(paths["geojson"])
    return paths


def _checkpoint(path: Path) -> None:
    from vstain.models import create, model_configs, save_checkpoint

    config = {**model_configs("pix2pix")["small"], "ngf": 4, "ndf": 4, "n_blocks": 1}
    save_checkpoint(create("pix2pix", config, seed=0), path)


def _regions(path: Path) -> None:
    from vstain.train.region_geojson import write_regions
    from vstain.train.regions import Region

    write_regions(path, [Region(0, 0, 64, 64), Region(100, 40, 32, 48, validation=True)])


def make_cases(root: Path, per_kind: int, seed: int = 0) -> list[dict]:
    """``per_kind`` mutated copies of each seed, one per folder ``root/<kind>-<i>``."""
    originals = seeds(root / "seeds")
    cases = []
    for kind, original in originals.items():
        for i in range(per_kind):
            rng = np.random.default_rng([seed, i, len(cases)])
            folder = root / f"{kind}-{i:03d}"
            folder.mkdir()
            target = folder / original.name
            if original.is_dir():
                shutil.copytree(original, target)
                how = _mutate_store(target, rng)
            else:
                data = original.read_bytes()
                how, data = _mutate_file(kind, data, target, rng)
                target.write_bytes(data)
            cases.append({"id": folder.name, "kind": kind, "path": str(target), "how": how})
    return cases


def _mutate_file(kind: str, data: bytes, target: Path, rng) -> tuple[str, bytes]:
    tamper = TAMPER[kind]
    choice = rng.integers(3)
    if choice == 0:
        cut = int(rng.integers(0, len(data)))
        return f"truncated at {cut}", data[:cut]
    if choice == 1:
        return flip(data, rng)
    target.write_bytes(data)  # tifffile tampers in place
    return tamper(data, target, rng)


def flip(data: bytes, rng) -> tuple[str, bytes]:
    out = bytearray(data)
    n = int(rng.integers(1, 9))
    # half the flips in the first 1 KiB, where headers are
    where = np.concatenate([rng.integers(0, min(1024, len(out)), n), rng.integers(0, len(out), n)])
    for i in where:
        out[i] ^= int(rng.integers(1, 256))
    return f"flipped bytes {sorted(where.tolist())}", bytes(out)


def _tamper_tiff(data: bytes, target: Path, rng) -> tuple[str, bytes]:
    with tifffile.TiffFile(target) as tif:
        tags = [
            (page.index, tag)
            for page in tif.pages
            for tag in page.tags
            if tag.name in TIFF_TAGS and tag.dtype in (3, 4, 16)
        ]
        byteorder = tif.byteorder
    page, tag = tags[int(rng.integers(len(tags)))]
    fmt = byteorder + {3: "H", 4: "I", 16: "Q"}[tag.dtype]
    index = int(rng.integers(tag.count))
    value = int(rng.choice(HOSTILE_INTS)) & (2 ** (8 * struct.calcsize(fmt)) - 1)
    out = bytearray(data)
    offset = tag.valueoffset + index * struct.calcsize(fmt)
    out[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return f"page {page} {tag.name}[{index}] = {value}", bytes(out)


def _tamper_png(data: bytes, target: Path, rng) -> tuple[str, bytes]:
    out = bytearray(data)
    field = int(rng.integers(5))  # width, height, bit depth, colour type, interlace
    if field < 2:
        value = int(rng.choice(HOSTILE_INTS))
        out[16 + 4 * field : 20 + 4 * field] = struct.pack(">I", value)
    else:
        value = int(rng.integers(256))
        out[24 + field - 2 + (field > 2)] = value
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return f"IHDR field {field} = {value}", bytes(out)


def _tamper_jpeg(data: bytes, target: Path, rng) -> tuple[str, bytes]:
    out = bytearray(data)
    sof = out.index(b"\xff\xc0")
    field = int(rng.integers(4))  # precision, height, width, components
    value = int(rng.choice(HOSTILE_INTS)) & 0xFFFF
    if field in (0, 3):
        out[sof + (4 if field == 0 else 9)] = value & 0xFF
    else:
        out[sof + 5 + 2 * (field - 1) : sof + 7 + 2 * (field - 1)] = struct.pack(">H", value)
    return f"SOF field {field} = {value}", bytes(out)


def _tamper_safetensors(data: bytes, target: Path, rng) -> tuple[str, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if rng.integers(4) == 0:
        values = [0, n - 1, n + 1, 2**40, 2**64 - 1]
        value = values[int(rng.integers(len(values)))]
        return f"header length = {value}", struct.pack("<Q", value) + data[8:]
    if rng.integers(2):
        how, text = tamper_json(json.loads(header["__metadata__"]["vstain_card"]), rng)
        header["__metadata__"]["vstain_card"] = text
        how, text = f"card: {how}", json.dumps(header)
    else:
        how, text = tamper_json(header, rng)
    raw = text.encode()
    return how, struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def _tamper_geojson(data: bytes, target: Path, rng) -> tuple[str, bytes]:
    how, text = tamper_json(json.loads(data), rng)
    return how, text.encode()


def tamper_json(document, rng) -> tuple[str, str]:
    """Replace one value anywhere in ``document`` by a hostile one (or by deep nesting)."""
    parents, trail = [document], []
    while isinstance(parents[-1], dict | list) and parents[-1] and rng.random() < 0.8:
        node = parents[-1]
        key = list(node)[int(rng.integers(len(node)))] if isinstance(node, dict) else None
        key = key if key is not None else int(rng.integers(len(node)))
        trail.append(key)
        parents.append(node[key])
    if len(parents) == 1:
        return "document = deep nesting", DEEP
    deep = rng.random() < 0.1
    value = "__DEEP__" if deep else HOSTILE_JSON[int(rng.integers(len(HOSTILE_JSON)))]
    parents[-2][trail[-1]] = value
    text = json.dumps(document).replace('"__DEEP__"', DEEP)
    return f"{trail} = {'deep nesting' if deep else value!r}", text


def _mutate_store(store: Path, rng) -> str:
    files = sorted(p for p in store.rglob("*") if p.is_file())
    metadata = [p for p in files if p.name in ("zarr.json", ".zattrs", ".zarray", ".zgroup")]
    choice = rng.integers(4)
    if choice == 0:
        victim = files[int(rng.integers(len(files)))]
        victim.unlink()
        return f"deleted {victim.relative_to(store)}"
    pool = metadata if choice == 3 else files
    victim = pool[int(rng.integers(len(pool)))]
    data = victim.read_bytes()
    if choice == 1:
        cut = int(rng.integers(0, len(data)))
        victim.write_bytes(data[:cut])
        return f"{victim.relative_to(store)} truncated at {cut}"
    if choice == 2:
        how, data = flip(data, rng)
        victim.write_bytes(data)
        return f"{victim.relative_to(store)} {how}"
    how, text = tamper_json(json.loads(data), rng)
    victim.write_text(text)
    return f"{victim.relative_to(store)}: {how}"


TAMPER: dict[str, Callable] = {
    "svs": _tamper_tiff,
    "ome-tiff": _tamper_tiff,
    "strips": _tamper_tiff,
    "png": _tamper_png,
    "jpeg": _tamper_jpeg,
    "safetensors": _tamper_safetensors,
    "geojson": _tamper_geojson,
}
