"""Evaluation of a separator: SI-SDRi and SDRi per mixture against a baseline run (or the unprocessed mixture).

The data is a WSJ0-mix split folder, a LibriMix CSV, or a LibriSpeech-style speech folder: then the fixed test
mixtures of its held-out test speakers are built in memory, exactly as ``sa-speechsep mixtures`` writes its
``tt`` part with the same options (defaults: the run's ``data.test_speakers`` / ``val_speakers`` /
``split_seed`` / ``eval_mixtures`` / ``eval_seconds`` / ``eval_seed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_attention.evaluation import Evaluation

__all__ = ["evaluate", "evaluate_dataset"]


def evaluate_dataset(
    pred: Any, dataset: Any, max_items: int = 0, with_sdr: bool = True, oracle: bool = False, progress: bool = True
) -> list[dict[str, Any]]:
    """Per-mixture SI-SDR(i) and SDR(i) of a predictor on a dataset (optionally also the oracle IRM)."""
    from tqdm.auto import tqdm

    from .metrics import ideal_ratio_mask, separation_scores
    from .separate import separate_chunked

    n = len(dataset) if not max_items else min(max_items, len(dataset))
    names = getattr(dataset, "names", None)
    rows = []
    for i in tqdm(range(n), disable=not progress, desc="evaluate"):
        item = dataset[i]
        mix, ref = item["mix"], item["sources"]
        est = separate_chunked(pred.model, mix, pred.chunk, pred.overlap, pred.device)  # (S, T)
        s = separation_scores(est[None], ref[None], mix[None], with_sdr=with_sdr)
        row: dict[str, Any] = {"index": i, **({"name": names[i]} if names is not None else {})}
        row.update({k: v[0] for k, v in s.items()})
        if oracle:
            irm = ideal_ratio_mask(mix.double(), ref.double())
            row["irm_si_sdri"] = separation_scores(irm[None], ref[None], mix[None], with_sdr=False)["si_sdri"][0]
        rows.append(row)
    return rows


def _mean(rows: list[dict[str, Any]] | None, key: str) -> float:
    vals = [r[key] for r in rows or [] if key in r]
    return sum(vals) / len(vals) if vals else float("nan")


def evaluate(
    pred: Any,
    data: str | None = None,
    baseline: str | None = None,
    *,
    max_items: int = 0,
    no_sdr: bool = False,
    oracle: bool = False,
    device: str = "cpu",
    progress: bool = True,
    mixtures: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    test_speakers: int | None = None,
    val_speakers: int | None = None,
    split_seed: int | None = None,
    speakers_file: str | None = None,
    **_: Any,
) -> Evaluation:
    """SI-SDRi / SDRi of ``pred`` (and of a ``baseline`` run) on a WSJ0-mix folder, LibriMix CSV or speech folder.

    Args:
        pred: a :class:`~sa_speechsep.predictor.SpeechsepPredictor`.
        data: the evaluation data (default: the config's ``data.test``).
        baseline: a baseline run folder (e.g. Conv-TasNet) scored on the same mixtures; without it the
            baseline is the unprocessed mixture (0 dB improvement).
        max_items: evaluate at most N mixtures (0: all).
        no_sdr: skip BSS-eval SDR (faster).
        oracle: also score the oracle ideal ratio mask.
        device: where the baseline runs.
        progress: show a progress bar.
        mixtures / seconds / seed: a speech folder's test mixtures (default: the config's ``eval_*``).
        test_speakers / val_speakers / split_seed / speakers_file: its speaker split (default: the config's).

    Raises:
        ValueError: speech-folder options given for a mixture folder or CSV.
    """
    from .data import build_dataset
    from .librispeech import SplitOptions, is_speaker_folder
    from .predictor import SpeechsepPredictor

    d = pred.cfg.data
    data = data or d.test
    speech = {
        "--mixtures": mixtures,
        "--seconds": seconds,
        "--seed": seed,
        "--test-speakers": test_speakers,
        "--val-speakers": val_speakers,
        "--split-seed": split_seed,
        "--speakers-file": speakers_file,
    }
    extra: dict[str, Any] = {}
    split_info: dict[str, Any] | None = None
    if is_speaker_folder(data):
        split = SplitOptions(
            d.test_speakers if test_speakers is None else test_speakers,
            d.val_speakers if val_speakers is None else val_speakers,
            d.split_seed if split_seed is None else split_seed,
            speakers_file or d.speakers_file,
        )
        extra = {
            "kind": "librispeech",
            "split": split,
            "part": "tt",
            "mixtures": d.eval_mixtures if mixtures is None else mixtures,
            "mixture_seconds": d.eval_seconds if seconds is None else seconds,
            "seed": d.eval_seed if seed is None else seed,
        }
        split_info = {
            "test_speakers": split.test_speakers,
            "val_speakers": split.val_speakers,
            "split_seed": split.seed,
            "mixtures": extra["mixtures"],
            "seconds": extra["mixture_seconds"],
            "seed": extra["seed"],
        }
    else:
        given = [k for k, v in speech.items() if v is not None]
        if given:
            raise ValueError(f"{data}: {', '.join(given)} apply to a speech folder only (use --max-items here)")
    ds = build_dataset(data, num_spks=pred.cfg.model.num_spks, sample_rate=pred.sample_rate, **extra)
    if split_info is not None and hasattr(ds, "split"):
        split_info["speakers"] = ds.split.counts()
    rows = evaluate_dataset(pred, ds, max_items, with_sdr=not no_sdr, oracle=oracle, progress=progress)
    if not rows:
        raise ValueError(f"{data}: no mixtures to evaluate")
    base_rows: list[dict[str, Any]] | None = None
    base_name = "unprocessed mixture"
    if baseline:
        bpred = SpeechsepPredictor.load(baseline, device=device)
        base_rows = evaluate_dataset(bpred, ds, max_items, with_sdr=not no_sdr, progress=progress)
        base_name = f"{bpred.cfg.model.arch} ({Path(baseline).name})"
    keys = [k for k in ("si_sdri", "sdri", "si_sdr", "sdr") if k in rows[0]]
    name = pred.cfg.model.arch + (f" ({pred.run.path.name})" if pred.run is not None else "")
    lines = [f"{'system':<32} " + " ".join(f"{k:>9}" for k in keys)]
    lines.append(f"{name:<32} " + " ".join(f"{_mean(rows, k):>9.2f}" for k in keys))
    if base_rows is not None:
        lines.append(f"{base_name:<32} " + " ".join(f"{_mean(base_rows, k):>9.2f}" for k in keys))
    if oracle:
        lines.append(f"{'oracle ideal ratio mask':<32} {_mean(rows, 'irm_si_sdri'):>9.2f}")
    return Evaluation(
        domain="speechsep",
        metric="SI-SDRi (dB)",
        model=_mean(rows, "si_sdri"),
        baseline=_mean(base_rows, "si_sdri") if base_rows is not None else 0.0,
        baseline_name=base_name,
        higher_is_better=True,
        details={
            "data": str(data),
            "speech_folder": split_info,
            "mixtures": len(rows),
            "model_means": {k: _mean(rows, k) for k in keys},
            "model_sdri": _mean(rows, "sdri"),
            "baseline_sdri": _mean(base_rows, "sdri") if base_rows is not None else 0.0,
            "oracle_irm_si_sdri": _mean(rows, "irm_si_sdri") if oracle else None,
            "per_mixture": rows,
            "baseline_per_mixture": base_rows,
        },
        report="\n".join(lines),
    )
