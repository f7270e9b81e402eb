"""Write fixed 2-speaker test mixtures (WSJ0-2mix layout) from a LibriSpeech-style speech folder.

Usage: python datasets/speechsep/build_mixtures.py --out data/librispeech-2mix [--src ../shared/data/librispeech-251]
       [--mixtures 200 --seconds 4 --seed 0 --test-speakers 25 --val-speakers 25 --split-seed 0]

Reads the official LibriSpeech tree (``train-clean-100/<speaker>/<chapter>/*.flac``, ``SPEAKERS.TXT`` beside it)
or a flat folder of ``<speaker>-<chapter>-<utt>.flac`` files, holds out sex-balanced validation and test speakers
(seeded) and writes ``<out>/{cv,tt}/{mix,s1,s2}/<utt1>_<gain1>_<utt2>_<gain2>.wav`` at 8 kHz plus
``manifest.json``. It is ``sa-speechsep mixtures`` (same options); the same function backs
``sa-speechsep evaluate --data FOLDER``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Runs ``sa-speechsep mixtures`` with these arguments; 2 on a data error."""
    from sa_speechsep.domain import main as speechsep_main

    return int(speechsep_main(["mixtures", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
