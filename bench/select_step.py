"""Choose a run's step on the validation slide: the candidate with the highest score.

Takes `vstain evaluate --split val --json` results of a run's step copies (`vstain train
--keep-steps`), prints one line per candidate and the chosen one's name last, so that only the
chosen checkpoint is then scored on the test slide (issue 29.4).
Run: ``.venv/bin/python bench/select_step.py VAL.json [...] --metric ssim``.
"""

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="vstain evaluate --json files")
    parser.add_argument("--metric", default="ssim", help="the criterion, fixed beforehand")
    args = parser.parse_args()
    scores = {}
    for path in args.results:
        with open(path) as f:
            scores |= json.load(f)
    for name, s in scores.items():
        print(f"{name}: {args.metric} {s[args.metric]:.4f}, psnr {s['psnr']:.2f}")
    print(max(scores, key=lambda name: scores[name][args.metric]))


if __name__ == "__main__":
    main()
