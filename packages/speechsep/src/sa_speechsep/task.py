"""The speech separation :class:`~shared_attention.engine.TrainTask`: utterance-level PIT SI-SNR training,
validation by SI-SDRi (MossFormer recipe: Adam 1.5e-4, clip 5, halve on plateau via the config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from shared_attention.engine import TaskHooks

from .config import SepConfig
from .models import build_model

__all__ = ["SpeechsepTask", "SepTask", "build_model"]


class SpeechsepTask(TaskHooks):
    """MossFormer (or the Conv-TasNet baseline) on the shared engine.

    Args:
        cfg: the speech separation config.
    """

    name = "speechsep"

    def __init__(self, cfg: SepConfig) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        from .data import build_dataset
        from .librispeech import SplitOptions

        d, spk = self.cfg.data, self.cfg.model.num_spks
        split = SplitOptions(d.test_speakers, d.val_speakers, d.split_seed, d.speakers_file)
        dynamic: dict[str, Any] = {}
        if d.train_kind in ("dynamic", "librispeech"):
            dynamic = {
                "gain_db": d.gain_db,
                "speed_range": (d.speed_min, d.speed_max),
                "length": d.dynamic_length,
                "speaker_speeds": tuple(d.speaker_speeds),
                "speaker_weights": dict(d.speaker_weights),
                "speaker_formants": tuple(d.speaker_formants),
            }
        train = build_dataset(
            d.librispeech_root if d.train_kind == "librispeech" else d.train,
            kind=d.train_kind,
            num_spks=spk,
            sample_rate=d.sample_rate,
            segment_seconds=d.segment_seconds,
            train=True,
            seed=self.cfg.train.seed,
            split=split,
            **dynamic,
        )
        val: Dataset[Any] = build_dataset(
            d.val,
            num_spks=spk,
            sample_rate=d.sample_rate,
            segment_seconds=d.val_segment_seconds,
            seed=d.eval_seed,
            split=split,
            part="cv",
            mixtures=d.eval_mixtures,
            mixture_seconds=d.eval_seconds,
        )
        if d.max_val_items:
            val = Subset(val, range(min(d.max_val_items, len(val))))  # type: ignore[arg-type]
        return train, val

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .metrics import pit_loss

        est = model(batch["mix"])  # (B, S, T)
        loss = pit_loss(est.float(), batch["sources"], clamp_db=self.cfg.loss_clamp_db)
        return {"loss": loss, "si_snr": -loss.detach()}

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .metrics import separation_scores

        est = model(batch["mix"])  # (B, S, T)
        s = separation_scores(est.float(), batch["sources"], batch["mix"], with_sdr=False)
        return {
            "si_sdr": torch.tensor(s["si_sdr"], dtype=torch.float64),
            "si_sdri": torch.tensor(s["si_sdri"], dtype=torch.float64),
        }

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        res = {}
        for key in ("si_sdr", "si_sdri"):
            vals = torch.cat([o[key].reshape(-1) for o in outputs])
            res[key] = float(vals.mean())
        return res

    def metadata(self) -> dict[str, Any]:
        from . import __version__

        m, d = self.cfg.model, self.cfg.data
        return {
            "package": {"name": "sa-speechsep", "version": __version__},
            "model": {"arch": m.arch, "variant": m.variant, "num_spks": m.num_spks, "overrides": dict(m.overrides)},
            "io": {
                "input": f"mono mixture waveform (B, T) at {d.sample_rate} Hz, any length",
                "output": f"separated waveforms (B, {m.num_spks}, T), speaker order arbitrary (PIT)",
            },
            "sample_rate": d.sample_rate,
        }


#: deprecated name (one release)
SepTask = SpeechsepTask
