"""Run fuzz cases in this process, one JSON line per case on stdout:
``python -m tests.fuzz.worker CASES_JSON ROOT``.

Each case runs in its own folder with a hard time limit (faulthandler ends the process, printing
where it hung); address space is capped so a runaway allocation fails here, not on the machine.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from vstain.errors import VstainError
from vstain.io import open_slide
from vstain.models import load_checkpoint
from vstain.train.region_geojson import read_regions

CASE_SECONDS = 30
EXTRA_ADDRESS_SPACE = 4 * 2**30
READ = 64


def read_slide(path: Path) -> None:
    """Open a slide and read a corner tile of each stored level."""
    slide = open_slide(path)
    stored = slide.levels[: len(slide.levels) - slide.metadata["computed_levels"]]
    for k, level in enumerate(stored):
        h, w = level.shape[:2]
        slide.read_region(0, 0, min(READ, w), min(READ, h), level=k)
        slide.read_region(max(w - READ, 0), max(h - READ, 0), min(READ, w), min(READ, h), level=k)


RUN = {"safetensors": load_checkpoint, "geojson": read_regions}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``root``."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            found[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return found


def run(case: dict) -> tuple[str, str]:
    try:
        RUN.get(case["kind"], read_slide)(Path(case["path"]))
        return "ok", ""
    except VstainError as e:
        return "error", str(e)
    except Exception as e:
        return "crash", "".join(traceback.format_exception(e))[-3000:]


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    root = Path(sys.argv[2])
    with open("/proc/self/statm") as f:
        virtual = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = virtual + EXTRA_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    files = snapshot(root)
    for i, case in enumerate(cases):
        folder = Path(case["path"]).parent
        before = {k: v for k, v in files.items() if not k.startswith(f"{folder}{os.sep}")}
        os.chdir(folder)
        faulthandler.dump_traceback_later(CASE_SECONDS, exit=True)
        started = time.monotonic()
        outcome, message = run(case)
        seconds = time.monotonic() - started
        faulthandler.cancel_dump_traceback_later()
        if i % 25 == 24:
            gc.collect()  # closes files of slides in reference cycles; slow, so not every case
        files = snapshot(root)
        after = {k: v for k, v in files.items() if not k.startswith(f"{folder}{os.sep}")}
        touched = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        result = {
            "id": case["id"],
            "outcome": outcome,
            "message": message,
            "seconds": seconds,
            "touched": touched,
            "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "start_rss_kib": start_rss,
        }
        print("CASE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
