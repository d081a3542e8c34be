"""Picture of test tiles: H&E, real IHC, then each checkpoint's virtual IHC, one row per tile.

python docs/make_model_gallery.py --data /tmp/ck818val --tiles 0 5 12 \
    --out docs/images/gallery_ck818.jpg --option steps=20 --option sampler=dpm-solver++ \
    implicit-stainer stain-diffuser pix2pix
Predict options (``--option KEY=VALUE``) go to the models that take them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.io import imsave

from vstain.cli import key_value
from vstain.models.registry import predict_options
from vstain.pipeline import load_model
from vstain.train.datasets import open_paired_dataset
from vstain.train.evaluate import to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", help="shipped names or checkpoint paths")
    parser.add_argument("--data", type=Path, required=True, help="paired dataset (test split)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--option", type=key_value, action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = open_paired_dataset(args.data, split="test")
    items = [data[i] for i in args.tiles]
    he = torch.stack([item["he"] for item in items])
    columns = [he, torch.stack([item["ihc"] for item in items])]
    for name in args.models:
        model = load_model(name, "cpu").model
        accepted = predict_options(model.card.architecture)
        options = {k: v for k, v in args.option if k in accepted}
        with torch.no_grad():
            columns.append(model.predict(he, **options).ihc)
    images = [to_uint8(c) for c in columns]  # each N x H x W x 3
    rows = [np.concatenate([im[i] for im in images], axis=1) for i in range(len(items))]
    imsave(args.out, np.concatenate(rows, axis=0), check_contrast=False)
    print(f"{args.out}: columns H&E, real IHC, " + ", ".join(args.models))


if __name__ == "__main__":
    main()
