"""The ``vstain`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vstain.errors import VstainError


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("region must be x,y,w,h in level-0 pixels") from None
    return x, y, w, h


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE of a model option; VALUE is JSON (a number, true/false, a list) or a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError("options are KEY=VALUE, e.g. steps=50")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_option_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="predict option of the model, e.g. steps=50 n_samples=4 (diffusion models)",
    )


def cmd_info(args) -> int:
    """Print levels, shapes, pixel size and tissue fraction of a slide."""
    from vstain.io import open_slide
    from vstain.tiles.job import slide_tissue_mask

    slide = open_slide(args.slide, backend=args.backend)
    print(f"{slide.path}")
    fmt = slide.metadata.get("format", "?")
    ps = f"{slide.pixel_size:.4f} um/px" if slide.pixel_size else "unknown (not in the file)"
    print(f"  format: {fmt}\n  backend: {slide.metadata['backend']}")
    if "backend_note" in slide.metadata:
        print(f"  backend note: {slide.metadata['backend_note']}")
    print(f"  pixel size: {ps}")
    for i, (lvl, ds) in enumerate(zip(slide.levels, slide.downsamples, strict=True)):
        chunk = "x".join(str(c[0]) for c in lvl.chunks[:2])
        print(f"  level {i}: {lvl.shape[1]} x {lvl.shape[0]} px, downsample {ds:g}, chunks {chunk}")
    for warning in slide.metadata.get("warnings", []):
        print(f"  file warning: {warning}")
    if args.check and _check(slide):
        return 3  # the tissue fraction would read the damaged tiles
    print(f"  tissue fraction: {slide_tissue_mask(slide).mean():.1%}")
    return 0


def _check(slide) -> bool:
    """Decode every stored tile of ``slide``; print what is damaged or not stored. True if a
    tile is damaged."""
    from vstain.io.check import check_slide

    with _ProgressBar("tiles") as bar:
        report = check_slide(slide, bar.update_counts)
    for level in report:
        line = f"  check level {level.level}: {level.tiles} tiles"
        if level.missing:
            line += f", {len(level.missing)} not stored (read as 0), first {level.missing[0]}"
        line += f", {len(level.damaged)} damaged" if level.damaged else ", all decoded"
        print(line)
        for tile, error in level.damaged[:5]:
            print(f"    tile {tile}: {error}")
    return any(level.damaged for level in report)


def cmd_stain(args) -> int:
    """Stain a slide (or a region of it) with a model into OME-Zarr or pyramidal OME-TIFF."""
    from vstain.pipeline import plan_run, run_plan

    plan = plan_run(
        args.slide,
        args.model,
        args.out,
        device=args.device,
        region=args.region,
        batch_size=args.batch_size,
        tile=args.tile,
        blend=args.blend,
        resume=args.resume,
        overwrite=args.overwrite,
        options=dict(args.option),
    )
    with _ProgressBar("tiles") as bar:
        result = run_plan(plan, progress=bar.update, cancel=bar.cancel)
    if result.cancelled:
        print(
            f"Interrupted after {result.computed} tiles; rerun with --resume to finish.",
            file=sys.stderr,
        )
        return 130
    print(
        f"{args.out}: {result.computed} tiles computed, {result.background} background, "
        f"{result.already_done} already done, {result.tiles_per_second:.2f} tiles/s"
    )
    return 0


def cmd_batch(args) -> int:
    """Stain many slides on dask.distributed: a local cluster of --workers processes, or the
    cluster at --scheduler; one OME-Zarr (or OME-TIFF) per slide in --out and a JSON summary."""
    from vstain.batch import SUMMARY_NAME, stain_slides

    with _ProgressBar("blocks") as bar:

        def progress(p) -> None:
            if p.done == 0:
                bar.bar.write(_dashboard_line(p.dashboard))
            bar.update_counts(p.done, p.total)

        summary = stain_slides(
            args.slides,
            args.model,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
            device=args.device,
            tile=args.tile,
            block=args.block,
            batch_size=args.batch_size,
            torch_threads=args.threads,
            predict_options=dict(args.option),
            ome_tiff=args.ome_tiff,
            resume=args.resume,
            overwrite=args.overwrite,
            summary_path=args.summary,
            progress=progress,
            cancel=bar.cancel,
        )
    done = sum(s.status == "done" for s in summary.slides)
    print(
        f"{done} of {len(summary.slides)} slides done: {summary.tiles} tiles in "
        f"{summary.seconds:.1f} s ({summary.tiles_per_second:.2f} tiles/s) on "
        f"{summary.workers} workers; summary: {args.summary or args.out / SUMMARY_NAME}"
    )
    for failure in summary.failures:
        print(f"vstain: failed: {failure['slide']}: {failure['error']}", file=sys.stderr)
    if summary.cancelled:
        print("Interrupted; rerun with --resume to finish.", file=sys.stderr)
        return 130
    return 3 if summary.failures else 0


def _dashboard_line(link: str | None) -> str:
    import importlib.util

    if link is None:
        return "dask dashboard: not served by this scheduler"
    if importlib.util.find_spec("bokeh") is None:
        return f"dask dashboard: {link} (needs bokeh here: pip install 'bokeh>=3.1')"
    return f"dask dashboard: {link}"


def cmd_synth_slide(args) -> int:
    """Write a simulated H&E slide (and its IHC) as pyramidal OME-TIFF, tile by tile, with the
    spec and true H&E -> IHC transform in OUT.synth.json."""
    from vstain.synth import make_spec
    from vstain.synth.export import export_pair, sidecar_path

    spec = make_spec(args.seed, args.marker, args.size, pixel_size=args.pixel_size, mode=args.mode)
    with _ProgressBar("chunks") as bar:
        info = export_pair(
            spec,
            args.out,
            args.ihc_out,
            overwrite=args.overwrite,
            progress=lambda path, done, total: bar.update_counts(done, total),
        )
    for path in (args.out, args.ihc_out):
        if path:
            print(f"{path}: {args.size} x {args.size} px at {args.pixel_size} um/px")
    if info["he_to_ihc_affine"]:
        print(f"true H&E -> IHC affine (pixels): {info['he_to_ihc_affine']}")
    print(f"spec and transform: {sidecar_path(args.out)}")
    return 0


def cmd_synth_dataset(args) -> int:
    """Write simulated paired tiles in the BCI layout (HE/, IHC/, truth/ by train/test)."""
    from vstain.synth import synth_dataset

    with _ProgressBar("tiles") as bar:
        synth_dataset(
            args.out,
            args.n,
            tile=args.tile,
            marker=args.marker,
            seed=args.seed,
            val=args.val,
            mode=args.mode,
            overwrite=args.overwrite,
            progress=bar.update_counts,
            cancel=bar.cancel,
        )
    val = f" + {args.val} validation pairs" if args.val else ""
    print(f"{args.out}: {args.n} tile pairs{val} ({args.marker}, {args.mode})")
    return 0


def cmd_train(args) -> int:
    """Train a registered model from scratch on a paired dataset (BCI / MIST / folder layout)."""
    from torch.utils.data import Subset

    from vstain.models import create
    from vstain.models.registry import resolve_config
    from vstain.train.datasets import (
        dataset_stain_reference,
        evenly_spaced,
        open_paired_dataset,
    )
    from vstain.train.loss_log import LossLog, loss_log_path
    from vstain.train.step_copies import StepCopies
    from vstain.train.trainer import train

    # --set entries replace entries of the named config; unknown keys are refused by name
    config = resolve_config(args.model, resolve_config(args.model, args.config) | dict(args.set))
    if len(args.data) > 1 and len(args.marker) != len(args.data):
        raise VstainError(
            f"{len(args.data)} --data folders need one --marker each, in the same order "
            f"(got {len(args.marker)})."
        )
    model = create(
        args.model,
        config,
        seed=args.seed,
        markers=args.marker,
        pixel_size=args.pixel_size,
        tile_size=args.tile,
        notes=args.notes,
    )
    if args.init_part is not None and args.init is None:
        raise VstainError("--init-part needs --init CHECKPOINT to take the part from.")
    if args.init is not None:
        _start_from(model, args.init, args.init_part)
    data = _training_pairs(args, with_mask=model.trains_on_dab_masks)
    if args.train_limit is not None:  # N pairs spread over all slides (dataset-size ablations)
        if not 1 <= args.train_limit <= len(data):
            raise VstainError(f"--train-limit must be 1 to {len(data)} (the training pairs).")
        data = Subset(data, evenly_spaced(args.train_limit, len(data)))
    # validation (the checkpoints' metrics, model selection): the first dataset's (the first
    # marker's) val split, a slide of its own (synth-dataset --val), else its test split
    val_split = "val" if (args.data[0] / "HE" / "val").is_dir() else "test"
    if val_split == "test":
        print(f"{args.data[0]} has no val split: validating on its test split")
    val = open_paired_dataset(args.data[0], split=val_split, crop=args.crop, seed=args.seed)
    model.card.training_data = (
        f"{', '.join(map(str, args.data))} ({len(data)} train pairs; validated on the "
        f"{val_split} split)"
    )
    train_pairs = [p for root in args.data for p in open_paired_dataset(root, split="train").pairs]
    model.card.stain_reference = dataset_stain_reference(train_pairs, seed=args.seed)
    if model.trains_on_dab_masks and args.refine_masks:
        model.card.training_data += (
            f"; coarse DAB masks refined by a segmentation net trained {args.refine_masks} steps"
            " on the threshold masks"
        )
    if args.out.exists() and not (args.resume or args.overwrite):
        raise VstainError(f"{args.out} exists. Use --resume to continue it or --overwrite.")
    bar = _TrainBar(args.steps)
    log = LossLog(loss_log_path(args.out), fresh=not args.resume)
    result = train(
        model,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        val_data=val,
        val_every=args.val_every,
        val_limit=args.val_limit,
        checkpoint_path=args.out,
        checkpoint_every=args.val_every,
        resume=args.resume,
        device=args.device,
        seed=args.seed,
        ema=args.ema,
        callbacks=[bar, log, *([StepCopies()] if args.keep_steps else [])],
    )
    bar.bar.close()
    print(f"{args.out}: {result.steps} steps; validation {result.validation[-1:] or 'none'}")
    print(f"losses of every step: {log.path}")
    return 0


def _start_from(model, path: Path, part: str | None) -> None:
    """Load the weights of checkpoint ``path`` (same architecture and shapes, checked strictly by
    ``load_weights``; only submodule ``part`` when given) into ``model`` and name it as the parent
    in the card."""
    from vstain.errors import CheckpointError
    from vstain.models import read_card
    from vstain.models.checkpoint import load_weights, sha256_file

    base = read_card(path)
    try:
        if base.architecture != model.card.architecture:
            raise CheckpointError(f"it holds a {base.architecture}")
        load_weights(model, path, part)
    except CheckpointError as e:
        raise VstainError(
            f"--init {path.name} has another shape than the {model.card.architecture} being "
            f"trained: {e} Start from a checkpoint trained with the same --config and the same "
            "--set entries that change the architecture, or load one part with --init-part."
        ) from e
    model.card.parent, model.card.parent_sha256 = path.name, sha256_file(path)
    model.card.provenance = {"init": path.name, "init_part": part, "parent_steps": base.steps}


def _training_pairs(args, with_mask: bool):
    """The training split of ``--data``, with coarse DAB masks when ``with_mask`` (each folder's
    own DAB statistics); several ``--data`` (one per ``--marker``, in order) are joined as
    uniplex pairs whose items carry their marker's index (multi-stain models)."""
    from vstain.train.datasets import MarkerDataset, open_paired_dataset

    def pairs(root: Path):
        data = open_paired_dataset(
            root, split="train", crop=args.crop, augment=True, seed=args.seed, with_mask=with_mask
        )
        if with_mask and args.refine_masks:
            _refine_masks(data, args)
        return data

    if len(args.data) == 1:
        return pairs(args.data[0])
    return MarkerDataset([pairs(root) for root in args.data])


def _refine_masks(data, args) -> None:
    """Replace ``data``'s threshold masks by a segmentation net's (trained on them)."""
    from tqdm import tqdm

    from vstain.models import choose_device
    from vstain.train.mask_refinement import refine_masks

    with tqdm(total=args.refine_masks, desc="refining DAB masks", unit="step") as bar:

        def log(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(bce=f"{loss:.3f}")

        refine_masks(
            data, args.refine_masks, seed=args.seed, device=choose_device(args.device), log=log
        )


class _TrainBar:
    """Trainer callback: a step progress bar with the losses, and a line per validation."""

    def __init__(self, steps: int):
        from tqdm import tqdm

        self.bar = tqdm(total=steps, unit="step", disable=None)
        self.log_every = max(1, steps // 100)  # a line per 1% when there is no terminal (logs)

    def on_step(self, step, losses, seconds):
        self.bar.n = step
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=True)
        if self.bar.disable and step % self.log_every == 0:
            parts = ", ".join(f"{k} {v:.3f}" for k, v in losses.items())
            print(f"step {step}/{self.bar.total}: {parts} ({seconds:.2f} s/step)", flush=True)

    def on_validation(self, step, metrics):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        self.bar.write(f"step {step}: {scores}")


def _registered_ihc(args, he, ihc):
    """The IHC under H&E regions: the slide itself (--aligned), or warped by a registration
    (--registration JSON, else registered here)."""
    from vstain.registration import Registration, register, registered_reader

    if args.aligned:
        return ihc
    if args.registration:
        reg = Registration.load(args.registration)
    else:
        print("Registering the IHC to the H&E...", file=sys.stderr)
        reg = register(he, ihc, flow=True)
    if not reg.ok:
        raise VstainError(
            f"The registration is not reliable (quality {reg.quality:.2f}). Register in napari "
            "(Compare with real IHC, with control points if needed), save it, and pass "
            "--registration FILE; or --aligned for slides that are already aligned."
        )
    return registered_reader(he, ihc, reg)


def cmd_finetune(args) -> int:
    """Fine-tune a checkpoint on rectangles (GeoJSON, QuPath-compatible) of an H&E slide and its
    real IHC; OUT keeps the best validated weights and the base is never written."""
    import dataclasses

    from vstain.io import open_slide
    from vstain.models import read_card
    from vstain.pipeline import choose_level
    from vstain.train.finetune import finetune
    from vstain.train.region_geojson import read_regions
    from vstain.weights import resolve_checkpoint

    base = resolve_checkpoint(args.checkpoint)
    he, ihc = open_slide(args.he), open_slide(args.ihc)
    regions = read_regions(args.regions)
    if args.validation:
        regions += [dataclasses.replace(r, validation=True) for r in read_regions(args.validation)]
    level = choose_level(he, read_card(base).pixel_size)
    bar = _TrainBar(args.steps)
    result = finetune(
        base,
        he,
        _registered_ihc(args, he, ihc),
        regions,
        args.out,
        part=args.part,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        crop=args.crop,
        level=level,
        augment=not args.no_augment,
        val_every=args.val_every,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        sources={"he": str(args.he), "ihc": str(args.ihc)},
        callbacks=[bar],
    )
    bar.bar.close()
    if result.checkpoint is None:
        print("Stopped before the first validation: nothing better than the base to keep.")
        return 1
    print(f"{result.checkpoint}: step {result.best_step} of {result.steps} kept")
    if result.warning:
        print(f"vstain: warning: {result.warning}", file=sys.stderr)
    for name, scores in (("before", result.before), ("after", result.after)):
        if scores:
            print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


def cmd_evaluate(args) -> int:
    """Score checkpoints on the test split of a paired dataset; print a table, write JSON and,
    with --write-card, the numbers into each checkpoint's card."""
    import json

    from vstain.models.checkpoint import record_evaluation
    from vstain.pipeline import load_model
    from vstain.train.datasets import open_paired_dataset
    from vstain.train.evaluate import evaluate, format_table
    from vstain.weights import check_writable_checkpoint

    if args.write_card:  # before the long evaluation, not after it
        for name in args.model:
            check_writable_checkpoint(name)
    data = open_paired_dataset(args.data, split=args.split)
    truth = args.data / "truth" / args.split
    options = dict(args.option)
    results = {}
    for name in args.model:
        loaded = load_model(name, args.device)
        results[Path(name).stem] = scores = evaluate(
            loaded.model,
            data,
            device=args.device,
            truth=truth if truth.is_dir() else None,
            limit=args.limit,
            options=options,
        )
        if args.write_card:
            where = f"{args.data} split {args.split} ({scores['images']} pairs)"
            record_evaluation(loaded.checkpoint, where, scores, options)
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def cmd_import(args) -> int:
    """Import a public generator (*_net_G.pth of pix2pix, CycleGAN, CUT, ASP or BCI's
    PyramidPix2pix) as a vstain checkpoint; the layout is read from the file."""
    from vstain.models.importers import import_checkpoint

    if args.out.exists() and not args.overwrite:
        raise VstainError(f"{args.out} exists. Choose another --out, or --overwrite.")
    card = {"markers": args.marker, "pixel_size": args.pixel_size}
    if args.notes:
        card["notes"] = args.notes
    model = import_checkpoint(args.pth, args.out, architecture=args.architecture, **card)
    c = model.card
    print(
        f"{args.out}: {c.provenance['layout']} as {c.architecture}, tile {c.tile_size} px + "
        f"{c.halo} px context, sha256 of {args.pth.name} {c.parent_sha256[:12]}..."
    )
    return 0


def cmd_demo(args) -> int:
    """Open napari on the demo slide pair (generated on first use) and stain the view."""
    try:
        from vstain.napari.demo import run_demo
    except ImportError as e:
        raise VstainError(
            f"The demo needs napari ({e}). Install with: pip install 'napari-vstain[napari]' PyQt6"
        ) from e
    run_demo(args.screenshot)
    if args.screenshot:
        print(f"screenshot saved to {args.screenshot}")
    return 0


class _ProgressBar:
    """tqdm bar fed by engine progress; Ctrl-C cancels the run cleanly instead of killing it."""

    def __init__(self, unit: str):
        from tqdm import tqdm

        from vstain.tiles import CancelToken

        self.bar = tqdm(unit=unit, dynamic_ncols=True, disable=None)
        self.cancel = CancelToken()
        self._previous = None

    def update(self, p) -> None:
        """Engine progress (a `Progress`)."""
        self.update_counts(p.done, p.total)

    def update_counts(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def __enter__(self):
        import signal

        def interrupt(signum, frame):
            self.cancel.cancel()

        self._previous = signal.signal(signal.SIGINT, interrupt)
        return self

    def __exit__(self, *exc):
        import signal

        signal.signal(signal.SIGINT, self._previous)
        self.bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vstain", description="Virtual IHC from H&E slides.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="describe a slide", description=cmd_info.__doc__)
    info.add_argument("slide", type=Path)
    info.add_argument(
        "--backend",
        default="auto",
        help="slide reader: auto (tifffile for TIFF, OpenSlide for what tifffile cannot read), "
        "tifffile or openslide",
    )
    info.add_argument(
        "--check", action="store_true", help="decode every tile; list damaged and missing ones"
    )
    info.set_defaults(run=cmd_info)

    stain = sub.add_parser(
        "stain", help="stain a slide with a model", description=cmd_stain.__doc__
    )
    stain.add_argument("slide", type=Path)
    stain.add_argument(
        "--model",
        required=True,
        help="registry name with shipped weights, or a .safetensors checkpoint path",
    )
    stain.add_argument(
        "--out",
        required=True,
        type=Path,
        help="OUT.zarr (OME-Zarr) or OUT.ome.tif (pyramidal OME-TIFF)",
    )
    stain.add_argument("--region", type=_region, help="x,y,w,h in level-0 pixels")
    stain.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    stain.add_argument(
        "--batch-size", type=int, help="tiles per call (default: from free GPU memory, else 4)"
    )
    stain.add_argument("--tile", type=int, help="tile size (default: the model card's)")
    stain.add_argument(
        "--blend",
        default="crop",
        help="crop (centre crop: exact when the card's halo covers the receptive field) or "
        "feather (blend tiles over half the halo: for instance-norm models, never exact)",
    )
    group = stain.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted run")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_option_argument(stain)
    stain.set_defaults(run=cmd_stain)

    batch = sub.add_parser(
        "batch", help="stain many slides on dask.distributed", description=cmd_batch.__doc__
    )
    batch.add_argument("slides", nargs="+", type=Path)
    batch.add_argument("--model", required=True, help="shipped name or .safetensors checkpoint")
    batch.add_argument("--out", required=True, type=Path, help="output folder")
    where = batch.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler (tcp://host:8786)")
    where.add_argument("--workers", type=int, help="local worker processes (default: GPUs or 1)")
    batch.add_argument("--threads", type=int, help="torch threads per worker (default: cores/N)")
    batch.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    batch.add_argument("--ome-tiff", action="store_true", help="convert outputs to OME-TIFF")
    batch.add_argument("--tile", type=int, help="tile size (default: the model card's)")
    batch.add_argument("--block", type=int, default=8, help="tiles per side of a work unit")
    batch.add_argument("--batch-size", type=int, default=4)
    batch.add_argument("--summary", type=Path, help="JSON summary (default OUT/batch-summary.json)")
    _add_option_argument(batch)
    again = batch.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="re-run only unfinished blocks")
    again.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    batch.set_defaults(run=cmd_batch)

    from vstain.synth.spec import MARKERS, MODES

    synth = sub.add_parser(
        "synth-slide", help="simulate a slide pair", description=cmd_synth_slide.__doc__
    )
    synth.add_argument("--marker", choices=MARKERS, default="ck818")
    synth.add_argument("--size", type=int, default=20000, help="side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--mode", choices=MODES, default="same-section")
    synth.add_argument("--pixel-size", type=float, default=0.5, help="um/px (0.5 = 20x)")
    synth.add_argument("--out", type=Path, required=True, help="H&E OME-TIFF")
    synth.add_argument("--ihc-out", type=Path, help="IHC OME-TIFF")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(run=cmd_synth_slide)

    dataset = sub.add_parser(
        "synth-dataset",
        help="simulate paired tiles (BCI layout)",
        description=cmd_synth_dataset.__doc__,
    )
    dataset.add_argument("--n", type=int, required=True, help="number of tile pairs")
    dataset.add_argument("--tile", type=int, default=256)
    dataset.add_argument("--marker", choices=MARKERS, default="ck818")
    dataset.add_argument("--seed", type=int, default=0)
    dataset.add_argument(
        "--val",
        type=int,
        default=0,
        help="also N validation pairs from a slide of their own (model selection)",
    )
    dataset.add_argument("--mode", choices=MODES, default="same-section")
    dataset.add_argument("--out", type=Path, required=True)
    dataset.add_argument("--overwrite", action="store_true")
    dataset.set_defaults(run=cmd_synth_dataset)

    tr = sub.add_parser(
        "train", help="train a model on paired tiles", description=cmd_train.__doc__
    )
    tr.add_argument("--model", required=True, help="registry name, e.g. pix2pix")
    tr.add_argument("--config", default="small", help="small or paper (or a named ablation)")
    tr.add_argument(
        "--set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config entry, e.g. --set keg=false (ablations)",
    )
    tr.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="BCI / MIST / folder-of-pairs root; repeat with one --marker each for multi-stain",
    )
    tr.add_argument("--out", type=Path, required=True, help="checkpoint .safetensors")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--crop", type=int, default=128)
    tr.add_argument("--tile", type=int, default=512, help="tile size written into the card")
    tr.add_argument("--marker", action="append", default=[], help="marker(s) for the card")
    tr.add_argument("--pixel-size", type=float, help="um/px of the training data, for the card")
    tr.add_argument("--notes", default="", help="free text for the card")
    tr.add_argument("--val-every", type=int, default=250)
    tr.add_argument(
        "--keep-steps",
        action="store_true",
        help="keep each checkpoint (every --val-every steps) as OUT.stepN.safetensors too, the "
        "candidates for choosing a step on the validation slide",
    )
    tr.add_argument(
        "--val-limit",
        type=int,
        default=64,
        help="validate on this many val (else test) pairs (default 64)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--init",
        type=Path,
        help="start from the weights of this checkpoint (same architecture; steps count from 0)",
    )
    tr.add_argument(
        "--init-part",
        metavar="NAME",
        help="with --init, load only this submodule's weights, e.g. detector (K-Stain's HSKD)",
    )
    tr.add_argument(
        "--train-limit", type=int, help="train on N pairs spread evenly over the list (all slides)"
    )
    tr.add_argument("--device", default="auto")
    tr.add_argument(
        "--refine-masks",
        type=int,
        default=0,
        metavar="STEPS",
        help="StainDiffuser: train a segmentation net STEPS steps on the threshold DAB masks and "
        "train on its masks instead (the paper did for CD3; 600 gave masks closer to the truth "
        "than the threshold's for every seed tried)",
    )
    tr.add_argument(
        "--ema", type=float, help="keep and ship an EMA of the weights, e.g. 0.999 (diffusion)"
    )
    g = tr.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true")
    g.add_argument("--overwrite", action="store_true")
    tr.set_defaults(run=cmd_train)

    ft = sub.add_parser(
        "finetune", help="fine-tune a checkpoint on slide regions", description=cmd_finetune.__doc__
    )
    ft.add_argument("--checkpoint", required=True, help="base checkpoint or shipped name")
    ft.add_argument("--he", required=True, type=Path, help="H&E slide")
    ft.add_argument("--ihc", required=True, type=Path, help="real IHC slide (adjacent section)")
    ft.add_argument("--regions", required=True, type=Path, help="rectangles, GeoJSON (QuPath)")
    ft.add_argument("--validation", type=Path, help="validation rectangles, GeoJSON")
    ft.add_argument("--out", required=True, type=Path, help="new checkpoint .safetensors")
    ft.add_argument("--part", choices=("all", "decoder", "norm"), default="all")
    ft.add_argument("--steps", type=int, default=300)
    ft.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    ft.add_argument("--batch-size", type=int, default=4)
    ft.add_argument("--crop", type=int, default=128)
    ft.add_argument("--no-augment", action="store_true")
    ft.add_argument("--val-every", type=int, default=50)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--device", default="auto")
    ft.add_argument("--resume", action="store_true", help="continue an interrupted fine-tune")
    align = ft.add_mutually_exclusive_group()
    align.add_argument("--registration", type=Path, help="registration JSON (Compare widget)")
    align.add_argument("--aligned", action="store_true", help="the IHC is already aligned")
    ft.set_defaults(run=cmd_finetune)

    ev = sub.add_parser(
        "evaluate", help="score models on paired tiles", description=cmd_evaluate.__doc__
    )
    ev.add_argument("--model", action="append", required=True, help="checkpoint or shipped name")
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, help="at most this many pairs")
    ev.add_argument("--json", type=Path, help="write the results here")
    ev.add_argument("--device", default="auto")
    ev.add_argument(
        "--write-card", action="store_true", help="store the results in each checkpoint's card"
    )
    _add_option_argument(ev)
    ev.set_defaults(run=cmd_evaluate)

    imp = sub.add_parser(
        "import", help="import a public generator .pth", description=cmd_import.__doc__
    )
    imp.add_argument("pth", type=Path, help="generator state dict, e.g. latest_net_G.pth")
    imp.add_argument("--out", type=Path, required=True, help="new checkpoint .safetensors")
    imp.add_argument("--marker", action="append", default=[], help="marker(s) for the card")
    imp.add_argument("--pixel-size", type=float, help="um/px the model was trained at")
    imp.add_argument("--architecture", help="registry model (default: the layout's)")
    imp.add_argument("--notes", help="free text for the card")
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(run=cmd_import)

    demo = sub.add_parser(
        "demo", help="open napari on the demo slides", description=cmd_demo.__doc__
    )
    demo.add_argument("--screenshot", type=Path, help="save the window to FILE and exit")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except VstainError as e:
        print(f"vstain: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, a vanished network share
        print(
            f"vstain: error: {e}. Check the path, its permissions and free space.", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
