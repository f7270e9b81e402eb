"""CLI end to end on tiny data: train -> evaluate (evaluation.json) -> separate; convert official weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch
from sa_speechsep.cli import main
from sa_speechsep.predictor import SeparationPredictor


def _split(root, n, seconds=1.0, sr=8000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        f1, f2 = rng.uniform(120, 200), rng.uniform(400, 900)
        s1 = 0.3 * np.sin(2 * np.pi * f1 * t) * np.clip(np.sin(2 * np.pi * 3 * t + i), 0, None)
        s2 = 0.3 * np.sign(np.sin(2 * np.pi * f2 * t)) * np.clip(np.sin(2 * np.pi * 5 * t - i), 0, None)
        for name, x in (("s1", s1), ("s2", s2), ("mix", s1 + s2)):
            (root / name).mkdir(parents=True, exist_ok=True)
            sf.write(str(root / name / f"{i:03d}.wav"), x.astype(np.float32), sr, subtype="PCM_16")


def test_help_is_instant_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "sa_speechsep.cli", "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    for cmd in ("train", "evaluate", "separate", "convert"):
        assert cmd in out.stdout
    probe = "import sys, sa_speechsep.cli; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_train_evaluate_separate(tmp_path, capsys):
    data = tmp_path / "data"
    _split(data / "tr", 6)
    _split(data / "cv", 2, seed=1)
    _split(data / "tt", 2, seed=2)
    run = tmp_path / "run"
    base = tmp_path / "base"
    common = [
        f"data.train={data / 'tr'}",
        f"data.val={data / 'cv'}",
        f"data.test={data / 'tt'}",
        "train.max_steps=4",
        "train.eval_every=4",
        "train.checkpoint_every=4",
        "train.progress=false",
        "data.segment_seconds=0.5",
    ]
    assert main(["train", "--config", "tiny", f"train.run_dir={run}", *common]) == 0
    assert main(["train", "--config", "tiny", f"train.run_dir={base}", "model.arch=convtasnet", *common]) == 0
    assert (run / "model.safetensors").is_file()
    assert main(["evaluate", "--run", str(run), "--baseline-run", str(base), "--oracle"]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["domain"] == "speechsep" and ev["higher_is_better"] is True
    assert ev["baseline_name"].startswith("convtasnet")
    assert len(ev["details"]["per_mixture"]) == 2
    assert {"si_sdri", "sdri", "irm_si_sdri"} <= set(ev["details"]["per_mixture"][0])
    assert np.isfinite(ev["model"]) and np.isfinite(ev["baseline"])
    out_dir = tmp_path / "sep"
    assert main(["separate", str(data / "tt" / "mix" / "000.wav"), "--out", str(out_dir), "--run", str(run)]) == 0
    wavs = sorted(out_dir.glob("*.wav"))
    assert [w.name for w in wavs] == ["000_s1.wav", "000_s2.wav"]
    assert sf.info(str(wavs[0])).samplerate == 8000 and sf.info(str(wavs[0])).frames == 8000
    # a bad input is reported, not a traceback
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    assert main(["separate", str(tmp_path / "bad.wav"), "--out", str(out_dir), "--run", str(run)]) == 2
    assert "not a readable audio file" in capsys.readouterr().err


def test_convert_official_to_run_folder(tmp_path):
    from sa_speechsep.models.mossformer import build_mossformer

    kwargs = dict(
        in_channels=32, out_channels=32, d_model=32, num_blocks=2, query_key_dim=16, group_size=16, expansion_factor=2.0
    )
    # an "official" checkpoint: our tiny-ish model's weights under the official names (inverse of the rules)
    from sa_speechsep.official import official_to_ours

    model = build_mossformer("mossformer-l", **kwargs)
    ours = model.state_dict()
    import re

    inv = {}
    for k in ours:
        m = re.match(r"mask_net\.blocks\.(\d+)\.(.*)", k)
        cand = k
        if k == "encoder.weight":
            cand = "encoder.conv1d.weight"
        elif m:
            rest = m.group(2)
            rest = re.sub(r"^(to_\w+)\.norm\.g$", r"\1.mdl.0.g", rest)
            rest = re.sub(r"^(to_\w+)\.proj\.", r"\1.mdl.1.", rest)
            rest = re.sub(r"^(to_\w+)\.conv\.conv\.", r"\1.mdl.3.sequential.1.conv.", rest)
            cand = f"mask_net.mdl.att_mdl.mossformerM.layers.{m.group(1)}.{rest}"
        else:
            for a, b in (
                ("blocks_norm.", "mdl.att_mdl.norm.norm."),
                ("skip_norm.", "mdl.att_norm."),
                ("in_proj.", "conv1d_encoder."),
                ("out_proj.", "conv1d_out."),
                ("mask_proj.", "conv1_decoder."),
                ("output.", "output.0."),
                ("output_gate.", "output_gate.0."),
            ):
                if k.startswith("mask_net." + a):
                    cand = "mask_net." + b + k[len("mask_net." + a) :]
        assert official_to_ours(cand) == k
        inv[cand] = ours[k]
    torch.save({"state_dict": inv}, tmp_path / "official.pt")
    out = tmp_path / "converted"
    assert main(["convert", str(tmp_path / "official.pt"), "--out", str(out), "--kwargs", json.dumps(kwargs)]) == 0
    pred = SeparationPredictor.load(out)
    x = torch.randn(1, 500)
    model.eval()
    torch.testing.assert_close(pred.model(x), model(x))
