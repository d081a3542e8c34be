"""Fuzz: truncated, byte-flipped and header-tampered slides, checkpoints, GeoJSON and OME-Zarr
stores end in a one-line `VstainError` or are read; never another exception, a hang, unbounded
memory or a file touched outside the case's folder."""

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import vstain
from tests.fuzz.mutate import make_cases

PER_KIND = 30
#: Whole run, s (the worker also limits each case, to `worker.CASE_SECONDS`).
RUN_SECONDS = 300
RSS_GROWTH_KIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def test_fuzzed_inputs_end_in_one_line_vstain_errors(tmp_path):
    cases = make_cases(tmp_path / "cases", PER_KIND, seed=24)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    home = tmp_path / "cases" / "home"
    home.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(vstain.__file__).parents[1])]),
        "HOME": str(home),
        "TMPDIR": str(home),
        # decodes of tampered tiles stay small (the default allows 1.2 GB)
        "VSTAIN_MAX_DECODE_PIXELS": str(4096**2),
    }
    started = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.worker", str(tmp_path / "cases.json"), str(home.parent)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=RUN_SECONDS,
    )
    elapsed = time.monotonic() - started
    results = [
        json.loads(line[5:]) for line in worker.stdout.splitlines() if line.startswith("CASE ")
    ]
    assert len(results) == len(cases), (
        f"worker stopped at {cases[len(results)]} (hang or crash):\n{worker.stderr[-3000:]}"
    )
    by_id = {c["id"]: c for c in cases}
    crashes = [(by_id[r["id"]], r["message"]) for r in results if r["outcome"] == "crash"]
    assert not crashes, f"{len(crashes)} crashes, first: {crashes[0]}"
    multiline = [(r["id"], r["message"]) for r in results if "\n" in r["message"]]
    assert not multiline, multiline[:3]
    touched = [(r["id"], r["touched"]) for r in results if r["touched"]]
    assert not touched, touched[:3]
    growth = max(r["rss_kib"] for r in results) - results[0]["start_rss_kib"]
    assert growth < RSS_GROWTH_KIB, f"peak RSS grew {growth} KiB"
    assert not os.listdir(home)
    outcomes = collections.Counter((by_id[r["id"]]["kind"], r["outcome"]) for r in results)
    slowest = max(results, key=lambda r: r["seconds"])
    print(
        f"{len(results)} cases in {elapsed:.1f} s, peak RSS growth {growth / 1024:.0f} MiB, "
        f"slowest {slowest['id']} {slowest['seconds']:.2f} s; {dict(sorted(outcomes.items()))}"
    )
