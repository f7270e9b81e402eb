"""Check a WSJ0-mix split folder, a LibriMix metadata CSV or a dynamic-mixing speaker folder.

Usage: python datasets/speechsep/check_layout.py PATH [--num-spks 2] [--dynamic] [--sample-rate 8000]
Reads every item once through sa_speechsep.data and prints counts, durations and the first problems.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--num-spks", type=int, default=2)
    ap.add_argument("--dynamic", action="store_true", help="PATH is a folder of speaker folders")
    ap.add_argument("--sample-rate", type=int, default=8000)
    ap.add_argument("--max-items", type=int, default=0, help="check at most N items (0: all)")
    args = ap.parse_args(argv)
    from sa_speechsep.data import build_dataset
    from tqdm.auto import tqdm

    try:
        ds = build_dataset(
            args.path,
            kind="dynamic" if args.dynamic else "auto",
            num_spks=args.num_spks,
            sample_rate=args.sample_rate,
            **({"length": args.max_items or 10} if args.dynamic else {}),
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(ds) if not args.max_items else min(args.max_items, len(ds))
    seconds, problems = 0.0, []
    for i in tqdm(range(n), desc="checking"):
        try:
            item = ds[i]
        except (FileNotFoundError, ValueError) as exc:
            problems.append(f"item {i}: {exc}")
            continue
        seconds += item["mix"].shape[-1] / args.sample_rate
        resid = float((item["sources"].sum(0) - item["mix"]).abs().max())
        if resid > 0.05:
            problems.append(f"item {i}: sources do not sum to the mixture (max residual {resid:.3f})")
    print(f"{args.path}: {n} items, {seconds / 3600:.2f} h, {len(problems)} problem(s)")
    for p in problems[:20]:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
