"""The speechsep domain's declaration: the core builds ``sa-speechsep`` and its run folders from it.

Examples::

    sa-speechsep sample data/speech-sample                        # offline 8 kHz sample set (asterisk + espeak-ng)
    sa-speechsep train                                            # config cpu (LibriSpeech speakers, 45 min)
    sa-speechsep train --config convtasnet-cpu                    # the peer baseline, same recipe
    sa-speechsep train --config cpu-small train.max_minutes=30    # offline speech-sample set
    sa-speechsep evaluate --run runs/speechsep/mossformer-librispeech --baseline runs/speechsep/convtasnet-librispeech
    sa-speechsep predict mixture.wav --out separated/ --run runs/speechsep/mossformer-librispeech
    sa-speechsep convert path/to/hub_folder_or_ckpt --out runs/speechsep/mossformer-l-official
    sa-speechsep mixtures --src ../shared/data/librispeech-251 --out data/librispeech-2mix   # fixed cv / tt sets
    sa-speechsep train data.librispeech_root=DIR data.val=DIR data.test=DIR   # your own LibriSpeech copy
    sa-speechsep evaluate --run runs/speechsep/mossformer-librispeech --data DIR --mixtures 200   # a speaker folder
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.domain import Command, Converted, Domain, arg

__all__ = ["DOMAIN", "main"]


def load_predictor(ns: argparse.Namespace) -> Any:
    """A predictor from ``--run`` or ``--official``, with the chunking options."""
    from .predictor import SpeechsepPredictor

    if ns.run:
        pred = SpeechsepPredictor.load(ns.run, device=ns.device)
    elif ns.official:
        pred = SpeechsepPredictor.from_official(ns.official, device=ns.device)
    else:
        raise ValueError("give --run RUN_DIR or --official PATH")
    if ns.chunk_seconds:
        pred.chunk = int(round(ns.chunk_seconds * pred.sample_rate))
        pred.overlap = int(round(ns.overlap_seconds * pred.sample_rate))
    return pred


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """Separates one mixture into ``<out>/<stem>_s1.wav``, ``<stem>_s2.wav``, ..."""
    assert out is not None
    outs = pred.separate_file(path, out)
    return f"{path} -> " + ", ".join(str(o) for o in outs)


_CONVERT_FIELDS = (
    "kernel_size",
    "stride",
    "in_channels",
    "out_channels",
    "bias",
    "num_blocks",
    "d_model",
    "attn_dropout",
    "group_size",
    "query_key_dim",
    "expansion_factor",
    "rotary_dim",
)


def convert(sources: Sequence[str], kwargs: str | None = None) -> Converted:
    """An official MossFormer(L) checkpoint (file or hub folder) -> model + config (strict load)."""
    import json

    from .config import SpeechsepConfig, SpeechsepModelConfig
    from .official import load_official

    if len(sources) != 1:
        raise ValueError("give one official state dict file or hub folder")
    try:
        official_kwargs = json.loads(kwargs) if kwargs else {}
    except ValueError as exc:
        raise ValueError(f"--kwargs: invalid JSON: {exc}") from None
    if not isinstance(official_kwargs, dict):
        raise ValueError("--kwargs: expected a JSON object of constructor arguments")
    model = load_official(sources[0], **official_kwargs)
    c = model.cfg
    cfg = SpeechsepConfig(
        model=SpeechsepModelConfig(
            arch="mossformer",
            variant="mossformer-l",
            num_spks=c.num_spks,
            overrides={k: getattr(c, k) for k in _CONVERT_FIELDS},
        )
    )
    n = sum(p.numel() for p in model.parameters())
    return Converted(
        model,
        cfg,
        {"source": str(sources[0]), "official_kwargs": official_kwargs},
        summary=f"{sources[0]} ({n:,} parameters, strict load ok)",
    )


def mixtures(ns: argparse.Namespace) -> int:
    """``sa-speechsep mixtures``: writes fixed WSJ0-2mix-style cv / tt mixtures of a speech folder's held-out
    speakers."""
    import time

    from .librispeech import SplitOptions, write_mixtures

    start = time.perf_counter()
    split = SplitOptions(ns.test_speakers, ns.val_speakers, ns.split_seed, ns.speakers_file)
    manifest = write_mixtures(
        ns.src,
        ns.out,
        mixtures=ns.mixtures,
        seconds=ns.seconds,
        seed=ns.seed,
        split=split,
        sample_rate=ns.sample_rate,
        overwrite=ns.overwrite,
        progress=not ns.no_progress,
    )
    for part, row in manifest["split"]["counts"].items():
        sexes = ", ".join(f"{k} {row[k]}" for k in ("F", "M", "?") if row[k])
        print(f"{part}: {row['speakers']} speakers ({sexes})")
    for part, names in manifest["mixtures"].items():
        print(f"{part}: {len(names)} mixtures of {ns.seconds:g} s -> {Path(ns.out) / part}")
    print(f"wrote {Path(ns.out) / 'manifest.json'} in {time.perf_counter() - start:.1f} s")
    return 0


_SPLIT_ARGS = (
    arg("--test-speakers", type=int, help="held-out test speakers (default: 25, or the run's data.test_speakers)"),
    arg("--val-speakers", type=int, help="held-out validation speakers (default: 25, or the run's data.val_speakers)"),
    arg("--split-seed", type=int, help="seed of the speaker split (default: 0, or the run's data.split_seed)"),
    arg("--speakers-file", help="SPEAKERS.TXT giving the sexes (default: in the folder or the one above)"),
)

DOMAIN = Domain(
    name="speechsep",
    summary="MossFormer speech separation: train, evaluate, separate (predict), convert, sample.",
    convert="sa_speechsep.domain:convert",
    official="sa_speechsep.official:load_official",
    load_predictor="sa_speechsep.domain:load_predictor",
    predict_suffixes=(".wav", ".flac", ".ogg", ".mp3"),
    aliases={"separate": "predict"},
    arguments={
        "model": (
            arg("--official", help="official MossFormer(L) checkpoint file or hub folder instead of --run"),
            arg("--chunk-seconds", type=float, default=0.0, help="chunk length (default: the config's)"),
            arg("--overlap-seconds", type=float, default=2.0, help="chunk overlap with --chunk-seconds"),
        ),
        "evaluate": (
            arg("--max-items", type=int, default=0, help="evaluate at most N mixtures (0: all)"),
            arg("--no-sdr", action="store_true", help="skip the BSS-eval SDR (faster)"),
            arg("--oracle", action="store_true", help="also score the oracle ideal ratio mask"),
            arg("--mixtures", type=int, help="with a speech folder as --data: test mixtures (default: the config's)"),
            arg("--seconds", type=float, help="with a speech folder: mixture length (default: the config's)"),
            arg("--seed", type=int, help="with a speech folder: the mixtures' seed (default: the config's)"),
            *_SPLIT_ARGS,
        ),
        "convert": (arg("--kwargs", help="official constructor arguments as JSON, e.g. '{\"num_spks\": 3}'"),),
    },
    commands={
        "mixtures": Command(
            help="write fixed 2-speaker cv / tt mixtures (WSJ0-2mix layout) from a LibriSpeech-style speech folder",
            run="sa_speechsep.domain:mixtures",
            arguments=(
                arg("--src", default="../shared/data/librispeech-251", help="LibriSpeech tree or flat folder"),
                arg("--out", required=True, help="output folder ({cv,tt}/{mix,s1,s2}/<name>.wav, manifest.json)"),
                arg("--mixtures", type=int, default=200, help="mixtures per part"),
                arg("--seconds", type=float, default=4.0, help="mixture length"),
                arg("--seed", type=int, default=0, help="the mixtures' seed"),
                arg("--test-speakers", type=int, default=25),
                arg("--val-speakers", type=int, default=25),
                arg("--split-seed", type=int, default=0, help="seed of the speaker split (keep the training one)"),
                arg("--speakers-file", help="SPEAKERS.TXT (default: in --src or the folder above)"),
                arg("--sample-rate", type=int, default=8000),
                arg("--overwrite", action="store_true", help="replace the WAV files of an earlier run in --out"),
                arg("--no-progress", action="store_true"),
            ),
        ),
    },
    user_errors=("builtins:NotImplementedError",),
    examples=__doc__.split("\n\n", 1)[1] if __doc__ else "",
)


main = DOMAIN.main  #: the ``sa-speechsep`` console script


if __name__ == "__main__":
    raise SystemExit(main())
