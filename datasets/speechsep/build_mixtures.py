"""Write fixed 2-speaker test mixtures (WSJ0-2mix layout) from a LibriSpeech-style speech folder.

Usage: python datasets/speechsep/build_mixtures.py --out data/librispeech-2mix [--src ../shared/data/librispeech-251]
       [--mixtures 200 --seconds 4 --seed 0 --test-speakers 25 --val-speakers 25 --split-seed 0]

Reads the official LibriSpeech tree (``train-clean-100/<speaker>/<chapter>/*.flac``, ``SPEAKERS.TXT`` beside it)
or a flat folder of ``<speaker>-<chapter>-<utt>.flac`` files, holds out sex-balanced validation and test speakers
(seeded) and writes ``<out>/{cv,tt}/{mix,s1,s2}/<utt1>_<gain1>_<utt2>_<gain2>.wav`` at 8 kHz plus
``manifest.json``. The same function backs ``sa-speechsep mixtures`` and ``sa-speechsep evaluate --data FOLDER``.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Parses the options, writes the mixtures and prints the split; 2 on a data error."""
    from sa_speechsep.librispeech import DEFAULT_ROOT, SplitOptions, write_mixtures

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--src", default=DEFAULT_ROOT, help=f"speech folder (default: {DEFAULT_ROOT})")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--mixtures", type=int, default=200, help="mixtures per part (cv and tt)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0, help="the mixtures' seed")
    ap.add_argument("--test-speakers", type=int, default=25)
    ap.add_argument("--val-speakers", type=int, default=25)
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the speaker split")
    ap.add_argument("--speakers-file", help="SPEAKERS.TXT (default: in --src or the folder above)")
    ap.add_argument("--sample-rate", type=int, default=8000)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = write_mixtures(
            args.src,
            args.out,
            mixtures=args.mixtures,
            seconds=args.seconds,
            seed=args.seed,
            split=SplitOptions(args.test_speakers, args.val_speakers, args.split_seed, args.speakers_file),
            sample_rate=args.sample_rate,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for part, row in manifest["split"]["counts"].items():
        print(f"{part}: {row['speakers']} speakers (F {row['F']}, M {row['M']}, unknown {row['?']})")
    for part, names in manifest["mixtures"].items():
        print(f"{part}: {len(names)} mixtures")
    print(f"{args.out}: written in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
