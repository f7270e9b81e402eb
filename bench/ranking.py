"""Ranking benchmark (Hiformer on torchrec), measured side by side in one run.

(a) quality: Hiformer vs DCN-v2 vs logistic regression on the rank-sample set (MovieLens-100k from the
    installed recbole, temporal 80/20 split), each trained for the same number of epochs (``--epochs``,
    at most ``--minutes`` each) through the same data path and trainer (torchrec DMP, one process);
    AUC and LogLoss on the test split, mean +- std over ``--seeds`` training runs per model.
    Goals: Hiformer >= LR + 0.02 AUC and >= DCN-v2 (on the means).
(b) serving: scoring 1,000 candidates for one request, pruned serving path + low-rank composite projections
    vs full-rank, unpruned; p50 / p99 latency of each and the p50 ratio in the same run (goal >= 2x); plus the
    max difference pruned vs full on the same weights. Two settings: the Hiformer of the quality config
    (10 tokens, d 16) and the criteo-hiformer config (29 tokens: 26 categorical + 2 dense + task), where the
    composite projections the low rank shrinks are (L d) x (L H d_k) matrices.

(c) Frappe (the default quality table; real context-aware app-usage log, 10 categorical fields): the libfm
    file in ``../shared/data/frappe`` split once, seeded, 80/10/10 into train / valid / test; Hiformer, DCN-v2, a
    factorisation machine and logistic regression trained from their ``frappe-*`` configs (chosen on valid with
    ``--sweep``), the weights of the best validation AUC scored on test; ``--frappe-seeds`` runs per model.
    Goals: Hiformer >= LR + 0.02 and >= DCN-v2's and FM's means. Skipped, with the reason, when the file is absent.

Writes bench/results/ranking.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/ranking.py [--minutes 10] [--epochs 2] [--seeds 4] [--skip-quality] [--skip-serving]
       [--data data/rank-sample] [--frappe-source FILE] [--frappe-seeds 3] [--skip-frappe] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ranking.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- ranking:begin -->", "<!-- ranking:end -->"
ARCHS = (("hiformer", "Hiformer"), ("dcnv2", "DCN-v2"), ("lr", "logistic regression"))
FRAPPE_ARCHS = (
    ("hiformer", "Hiformer"),
    ("dcnv2", "DCN-v2"),
    ("fm", "factorisation machine"),
    ("lr", "logistic regression"),
)
FRAPPE_SOURCE = ROOT.parent / "shared" / "data" / "frappe" / "frappe.validation.libfm"
#: settings tried on the Frappe validation part per model (--sweep, seed 0, on top of each config); the configs
#: hold the winners (2026-12-04: Hiformer 0.9361 at width 64 / ranks 32, DCN-v2 0.9381, FM 0.9391, LR 0.9214
#: validation AUC; the Hiformer ranks 16 / 32 / 64 were compared at width 64 after this grid)
FRAPPE_GRID: dict[str, list[list[str]]] = {
    "lr": [["train.sparse_lr=0.05"], ["train.sparse_lr=0.2"]],
    "fm": [[f"model.embedding_dim={d}", f"train.sparse_lr={slr}"] for d in (16, 64, 128) for slr in (0.05, 0.1)],
    "dcnv2": [[f"model.embedding_dim={d}", f"train.sparse_lr={slr}"] for d in (16, 64) for slr in (0.05, 0.1)],
    "hiformer": [
        [f"model.embedding_dim={d}", f"model.dropout={p}", f"train.sparse_lr={slr}"]
        for d in (16, 32, 64)
        for p in (0.0, 0.2)
        for slr in (0.02, 0.1)
    ],
}


def _train_eval(
    data: Path, arch: str, run_dir: Path, epochs: int, minutes: float, threads: int, seed: int
) -> dict[str, Any]:
    import shutil

    from sa_ranking.evaluate import evaluate_run
    from sa_ranking.predictor import RankingPredictor

    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "sa_ranking.domain",
        "train",
        "--config",
        arch,
        f"train.run_dir={run_dir}",
        f"train.epochs={epochs}",
        f"train.max_minutes={minutes}",
        "train.progress=false",
        f"train.num_threads={threads}",
        f"train.seed={seed}",
        f"data.schema={data}/schema.json",
        f"data.train={data}/train.csv",
        f"data.valid={data}/test.csv",
    ]
    subprocess.run(cmd, check=True)
    train_s = time.time() - t0
    meta = json.loads((run_dir / "metadata.json").read_text())
    ev = evaluate_run(run_dir)
    return {
        "seed": seed,
        "auc": ev["auc"],
        "logloss": ev["logloss"],
        "rows": ev["rows"],
        "steps": meta["result"]["step"],
        "max_steps": meta["result"]["max_steps"],
        "best_step": meta["result"]["best_step"],
        "train_minutes": train_s / 60,
        "parameters": sum(p.numel() for p in RankingPredictor.load(run_dir).model.parameters()),
    }


def _seed_summary(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and sample std over seeds of test AUC and LogLoss (std 0 for one seed)."""
    out: dict[str, float] = {}
    for key in ("auc", "logloss"):
        v = np.array([r[key] for r in per_seed])
        out[key], out[f"{key}_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def _ensure_sample(data: Path) -> None:
    """Builds the rank-sample set at ``data`` when it is missing."""
    if not (data / "train.csv").is_file():
        subprocess.run([sys.executable, "-m", "sa_ranking.sample", str(data)], check=True)


def bench_quality(data: Path, epochs: int, minutes: float, runs: Path, threads: int, seeds: int = 1) -> dict[str, Any]:
    """Each model trained ``seeds`` times (seeds 0..seeds-1); AUC / LogLoss are means over the seeds (std too)."""
    _ensure_sample(data)
    out: dict[str, Any] = {
        "data": str(data),
        "epochs": epochs,
        "budget_minutes_per_model": minutes,
        "seeds": seeds,
        "models": {},
    }
    for arch, name in ARCHS:
        per_seed = []
        for seed in range(seeds):
            print(f"  training {name} (seed {seed}) ...", flush=True)
            per_seed.append(_train_eval(data, arch, runs / f"{arch}-seed{seed}", epochs, minutes, threads, seed))
        first = per_seed[0]
        out["models"][arch] = {
            "name": name,
            **_seed_summary(per_seed),
            "rows": first["rows"],
            "steps": first["steps"],
            "max_steps": first["max_steps"],
            "train_minutes": float(np.mean([r["train_minutes"] for r in per_seed])),
            "parameters": first["parameters"],
            "per_seed": per_seed,
        }
    m = out["models"]
    out["hiformer_minus_lr_auc"] = m["hiformer"]["auc"] - m["lr"]["auc"]
    out["hiformer_minus_dcnv2_auc"] = m["hiformer"]["auc"] - m["dcnv2"]["auc"]
    return out


def _read_rank_sample(path: Path) -> dict[str, np.ndarray]:
    import csv

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fields = ("label", "user", "item", "age", "gender", "occupation", "year")
    out = {k: np.array([int(r[k]) if r[k] else -1 for r in rows]) for k in fields}  # -1: missing (year)
    genres = np.zeros((len(rows), 19), dtype=np.float32)
    for i, r in enumerate(rows):
        for g in filter(None, r["genres"].split("|")):
            genres[i, int(g)] = 1.0
    out["genres"] = genres
    return out


def _item_rate(train: dict[str, np.ndarray], items: np.ndarray, prior: float = 10.0) -> np.ndarray:
    """Positive rate of each item in ``train``, shrunk towards the global rate with ``prior`` pseudo-rows."""
    n_items = int(max(train["item"].max(), items.max())) + 1
    pos = np.bincount(train["item"], weights=train["label"], minlength=n_items)
    cnt = np.bincount(train["item"], minlength=n_items).astype(np.float64)
    rate = train["label"].mean()
    return ((pos + prior * rate) / (cnt + prior))[items]


def bench_reference(data: Path) -> dict[str, Any]:
    """What the rank-sample features can separate on the test split, without any of our models:
    (1) the item's smoothed positive rate in the training split alone; (2) gradient-boosted trees
    (scikit-learn's HistGradientBoosting, when installed) on the user's demographics, the item's year and
    genres and its out-of-fold positive rate - i.e. the feature interactions a Hiformer could learn."""
    from sa_ranking.metrics import roc_auc

    _ensure_sample(data)
    tr, te = _read_rank_sample(data / "train.csv"), _read_rank_sample(data / "test.csv")
    seen_users = np.isin(te["user"], np.unique(tr["user"]))
    out: dict[str, Any] = {
        "test_rows": int(len(te["label"])),
        "unseen_user_fraction": float(1.0 - seen_users.mean()),
        "item_rate_auc": roc_auc(_item_rate(tr, te["item"]), te["label"]),
    }
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        out["gbdt_auc"] = None
        return out

    def table(d: dict[str, np.ndarray], rate: np.ndarray) -> np.ndarray:
        cols = [d["age"], d["gender"], d["occupation"], d["year"], rate]
        return np.column_stack([np.column_stack(cols).astype(np.float64), d["genres"]])

    folds = np.random.default_rng(0).integers(0, 5, len(tr["label"]))
    oof = np.zeros(len(tr["label"]))
    for f in range(5):  # out-of-fold item rates: a training row never sees its own label
        part = {k: v[folds != f] for k, v in tr.items()}
        oof[folds == f] = _item_rate(part, tr["item"][folds == f])
    gbdt = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_depth=3, categorical_features=[1, 2], random_state=0
    )
    gbdt.fit(table(tr, oof), tr["label"])
    out["gbdt_auc"] = roc_auc(gbdt.predict_proba(table(te, _item_rate(tr, te["item"])))[:, 1], te["label"])
    return out


def _frappe_split(source: Path, split: Path) -> dict[str, Path] | None:
    """The seeded 80/10/10 parts of the Frappe libfm file (made once); ``None`` (with the reason) when absent."""
    from sa_ranking.split import split_rows

    if not source.is_file():
        print(f"frappe: skipped: {source} is absent (read ../shared/data/README.md)", flush=True)
        return None
    parts = {p: split / f"{p}.libfm" for p in ("train", "valid", "test")}
    if not all(p.is_file() for p in parts.values()):
        parts = split_rows(source, split, (0.8, 0.1, 0.1), seed=0)
    return parts


def _frappe_run(
    parts: dict[str, Path], arch: str, run_dir: Path, seed: int, threads: int, minutes: float, extra: list[str]
) -> dict[str, Any]:
    """Trains ``frappe-<arch>`` (valid chooses the served weights), scores test; returns both AUCs."""
    import shutil

    from sa_ranking.evaluate import evaluate_run

    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cmd = [
        sys.executable, "-m", "sa_ranking.domain", "train", "--config", f"frappe-{arch}",
        f"train.run_dir={run_dir}", f"train.seed={seed}", f"train.max_minutes={minutes}", "train.progress=false",
        "train.tensorboard=false", f"train.num_threads={threads}",
        f"data.train={parts['train']}", f"data.valid={parts['valid']}", *extra,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    train_s = time.time() - t0
    meta = json.loads((run_dir / "metadata.json").read_text())
    out: dict[str, Any] = {
        "seed": seed,
        "settings": extra,
        "valid_auc": meta["result"]["best_value"],
        "best_step": meta["result"]["best_step"],
        "steps": meta["result"]["step"],
        "train_minutes": train_s / 60,
    }
    if extra == []:  # the test part is read only for the configs' own settings, never during the sweep
        ev = evaluate_run(run_dir, parts["test"])
        out.update(auc=ev["auc"], logloss=ev["logloss"], rows=ev["rows"])
    return out


def bench_frappe_sweep(source: Path, split: Path, runs: Path, threads: int, minutes: float) -> dict[str, Any] | None:
    """Validation AUC of every setting in :data:`FRAPPE_GRID` (seed 0); the test part is not read."""
    parts = _frappe_split(source, split)
    if parts is None:
        return None
    out: dict[str, Any] = {}
    for arch, name in FRAPPE_ARCHS:
        rows = []
        for k, extra in enumerate(FRAPPE_GRID[arch]):
            print(f"  sweep {name} {extra} ...", flush=True)
            rows.append(_frappe_run(parts, arch, runs / f"sweep-{arch}-{k}", 0, threads, minutes, extra))
        best = max(rows, key=lambda r: r["valid_auc"])
        out[arch] = {"name": name, "runs": rows, "best": best["settings"], "best_valid_auc": best["valid_auc"]}
        print(f"  {name}: best on valid {best['valid_auc']:.4f} with {best['settings']}", flush=True)
    return out


def bench_frappe(
    source: Path,
    split: Path,
    runs: Path,
    seeds: int,
    threads: int,
    minutes: float,
    archs: tuple[str, ...] = (),
    previous: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Every model's config trained ``seeds`` times; test AUC / LogLoss mean +- std (valid chose the weights).
    ``archs`` re-measures only those models and keeps the others from ``previous`` (the last results)."""
    parts = _frappe_split(source, split)
    if parts is None:
        return None
    out: dict[str, Any] = {"source": str(source), "seeds": seeds, "models": {}}
    for arch, name in FRAPPE_ARCHS:
        if archs and arch not in archs and previous and arch in previous.get("models", {}):
            out["models"][arch] = previous["models"][arch]
            continue
        per_seed = []
        for seed in range(seeds):
            print(f"  frappe {name} (seed {seed}) ...", flush=True)
            per_seed.append(_frappe_run(parts, arch, runs / f"frappe-{arch}-seed{seed}", seed, threads, minutes, []))
        out["models"][arch] = {
            "name": name,
            **_seed_summary(per_seed),
            "valid_auc": float(np.mean([r["valid_auc"] for r in per_seed])),
            "test_rows": per_seed[0]["rows"],
            "train_minutes": float(np.mean([r["train_minutes"] for r in per_seed])),
            "per_seed": per_seed,
        }
    m = out["models"]
    out["hiformer_minus_lr_auc"] = m["hiformer"]["auc"] - m["lr"]["auc"]
    out["hiformer_minus_dcnv2_auc"] = m["hiformer"]["auc"] - m["dcnv2"]["auc"]
    out["hiformer_minus_fm_auc"] = m["hiformer"]["auc"] - m["fm"]["auc"]
    return out


def _latencies(fn: Any, repeat: int) -> list[float]:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _rank_sample_request(candidates: int) -> tuple[Any, Any, Any]:
    """One MovieLens request (one user, many items) with the rank-sample Hiformer config."""
    from sa_ranking.config import load_ranking_config
    from sa_ranking.data import TableBuilder
    from sa_ranking.sample import SCHEMA
    from sa_ranking.schema import Schema

    cfg = load_ranking_config("hiformer").model
    schema = Schema.from_dict(SCHEMA)
    rng = np.random.default_rng(0)
    b = TableBuilder(schema)
    for _ in range(candidates):
        b.add(
            0.0,
            [0.3, 0.95],
            [
                [7],
                [int(rng.integers(1, 1683))],
                [30],
                [0],
                [4],
                [int(rng.integers(2048))],
                [int(rng.integers(30, 99))],
                sorted({int(g) for g in rng.integers(0, 19, 2)}),
            ],
        )
    return schema, cfg, b.build().batch()


def _criteo_request(candidates: int) -> tuple[Any, Any, Any]:
    """One Criteo-format request (39 features: 13 dense, 26 categorical) with the criteo-hiformer config
    (tables shrunk to 100k rows: lookup cost does not depend on the table size)."""
    from sa_ranking.config import load_ranking_config
    from sa_ranking.data import TableBuilder
    from sa_ranking.schema import criteo_schema

    cfg = load_ranking_config("criteo-hiformer").model
    schema = criteo_schema(100_000)
    rng = np.random.default_rng(0)
    b = TableBuilder(schema)
    user = [int(v) for v in rng.integers(0, 100_000, 13)]  # the request's user/context features
    for _ in range(candidates):
        dense = [float(np.log1p(v)) for v in rng.integers(0, 1000, 13)]
        sparse = [[u] for u in user] + [[int(v)] for v in rng.integers(0, 100_000, 13)]
        b.add(0.0, dense, sparse)
    return schema, cfg, b.build().batch()


def _frappe_request(candidates: int) -> tuple[Any, Any, Any]:
    """One Frappe request (one user in one context, many apps) with the frappe-hiformer config."""
    from sa_ranking.config import load_ranking_config
    from sa_ranking.data import TableBuilder
    from sa_ranking.schema import frappe_schema

    cfg = load_ranking_config("frappe-hiformer").model
    schema = frappe_schema()
    rng = np.random.default_rng(0)
    b = TableBuilder(schema)
    for _ in range(candidates):
        b.add(0.0, [], [[17], [int(rng.integers(4082))], [2], [5], [1], [0], [0], [3], [40], [100]])
    return schema, cfg, b.build().batch()


def bench_serving(setting: str, candidates: int, repeat: int, threads: int) -> dict[str, Any]:
    from sa_ranking.models import Hiformer

    from shared_attention.memory import keep_freed_heap

    keep_freed_heap()  # as sa-serve does: both variants measured with the server's allocator setting
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    request = {"criteo": _criteo_request, "frappe": _frappe_request}.get(setting, _rank_sample_request)
    schema, cfg, batch = request(candidates)
    torch.manual_seed(0)
    low = Hiformer(schema, cfg).eval()
    full = Hiformer(schema, replace(cfg, key_rank=None, value_rank=None)).eval()
    with torch.no_grad():
        diff = (
            (
                low(batch.dense_features, batch.sparse_features, prune=True)
                - low(batch.dense_features, batch.sparse_features, prune=False)
            )
            .abs()
            .max()
            .item()
        )

    def run(model: Hiformer, prune: bool) -> Any:
        def fn() -> None:
            with torch.no_grad():
                model(batch.dense_features, batch.sparse_features, prune=prune)

        return fn

    res: dict[str, Any] = {
        "setting": setting,
        "candidates": candidates,
        "repeat": repeat,
        "tokens": low.num_tokens,
        "embedding_dim": cfg.embedding_dim,
        "layers": cfg.num_layers,
        "key_rank": cfg.key_rank,
        "value_rank": cfg.value_rank,
        "pruned_vs_full_max_abs_diff": diff,
    }
    variants = {
        "full_rank_unpruned": run(full, False),
        "low_rank_pruned": run(low, True),
        "low_rank_unpruned": run(low, False),
        "full_rank_pruned": run(full, True),
    }
    lat: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # interleaved rounds: a slow spell of the machine hits every variant alike
        for name, fn in variants.items():
            lat[name] += _latencies(fn, max(repeat // 3, 1))
    for name, ts in lat.items():
        ts = sorted(ts)
        res[name] = {"p50_ms": 1e3 * ts[len(ts) // 2], "p99_ms": 1e3 * ts[min(len(ts) - 1, int(0.99 * len(ts)))]}
    torch.set_num_threads(before)
    res["threads"] = threads
    res["speedup_p50"] = res["full_rank_unpruned"]["p50_ms"] / res["low_rank_pruned"]["p50_ms"]
    res["parameters_full_rank"] = sum(p.numel() for p in full.parameters())
    res["parameters_low_rank"] = sum(p.numel() for p in low.parameters())
    return res


def render(res: dict[str, Any]) -> str:
    lines = [f"Measured {res['date']} on this machine ({res['threads']} torch threads, torch {res['torch']}).", ""]
    f = res.get("frappe")
    if f:
        lines += [
            f"Quality: **Frappe** (real app-usage log, 10 categorical fields; the {f['models']['lr']['test_rows']} "
            f"test rows of a seeded 80/10/10 split of {Path(f['source']).name}); each model's `frappe-*` config "
            f"(settings chosen on valid), the weights of the best validation AUC scored on test; mean +- std over "
            f"{f['seeds']} seeds:",
            "",
            "| model | train min | valid AUC | test AUC | test LogLoss | test AUC per seed |",
            "|---|---|---|---|---|---|",
        ]
        for m in f["models"].values():
            per = ", ".join(f"{r['auc']:.4f}" for r in m["per_seed"])
            lines.append(
                f"| {m['name']} | {m['train_minutes']:.1f} | {m['valid_auc']:.4f} | {m['auc']:.4f} +- "
                f"{m['auc_std']:.4f} | {m['logloss']:.4f} +- {m['logloss_std']:.4f} | {per} |"
            )
        lines += [
            "",
            f"Hiformer - LR: **{f['hiformer_minus_lr_auc']:+.4f} AUC** (goal >= +0.02); Hiformer - DCN-v2: "
            f"**{f['hiformer_minus_dcnv2_auc']:+.4f}**, Hiformer - FM: **{f['hiformer_minus_fm_auc']:+.4f}** "
            "(goals >= 0).",
            "",
        ]
    sw = res.get("frappe_sweep")
    if sw:
        lines += ["Settings chosen on the Frappe validation part (seed 0; the test part is not read):", ""]
        for m in sw.values():
            lines.append(
                f"- {m['name']}: best valid AUC {m['best_valid_auc']:.4f} of {len(m['runs'])} settings "
                f"with `{' '.join(m['best']) or 'config defaults'}`"
            )
        lines.append("")
    q = res.get("quality")
    if q:
        lines += [
            f"Quality: rank-sample (MovieLens-100k, label = rating >= 4, temporal 80/20 split, "
            f"{next(iter(q['models'].values()))['rows']} test rows), {q['epochs']} epochs each "
            f"(budget {q['budget_minutes_per_model']} min per model), torchrec DMP, weights after the last step "
            f"(no checkpoint selection on the test split); mean +- std over {q.get('seeds', 1)} seed(s):",
            "",
            "| model | parameters | steps | train min | AUC | LogLoss | AUC per seed |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in q["models"].values():
            per = ", ".join(f"{r['auc']:.4f}" for r in m.get("per_seed", []))
            lines.append(
                f"| {m['name']} | {m['parameters']:,} | {m['steps']}/{m['max_steps']} | "
                f"{m['train_minutes']:.1f} | {m['auc']:.4f} +- {m.get('auc_std', 0.0):.4f} | "
                f"{m['logloss']:.4f} +- {m.get('logloss_std', 0.0):.4f} | {per} |"
            )
        lines += [
            "",
            f"Hiformer - LR: **{q['hiformer_minus_lr_auc']:+.4f} AUC** (goal >= +0.02); "
            f"Hiformer - DCN-v2: **{q['hiformer_minus_dcnv2_auc']:+.4f} AUC** (goal >= 0).",
            "",
        ]
    r = res.get("reference")
    if r:
        gb = "not run (scikit-learn missing)" if r["gbdt_auc"] is None else f"{r['gbdt_auc']:.4f}"
        lines += [
            f"Reference on the same test split, no model of ours ({r['unseen_user_fraction']:.0%} of the "
            f"{r['test_rows']} test rows are users unseen in training): the item's smoothed positive rate in the "
            f"training split alone scores AUC **{r['item_rate_auc']:.4f}**; gradient-boosted trees on the "
            f"demographics, year, genres and the item rate (the interactions available to a Hiformer) score "
            f"**{gb}**.",
            "",
        ]
    for key, title in (
        ("serving_frappe", "Frappe config"),
        ("serving", "rank-sample config"),
        ("serving_criteo", "Criteo config"),
    ):
        s = res.get(key)
        if not s:
            continue
        lines += [
            f"Serving ({title}): one request of {s['candidates']} candidates, Hiformer ({s['tokens']} tokens, d "
            f"{s['embedding_dim']}, {s['layers']} layers), {s['repeat']} timed calls per variant (interleaved), "
            f"{s['threads']} torch thread(s):",
            "",
            "| variant | parameters | p50 | p99 |",
            "|---|---|---|---|",
            f"| full-rank, unpruned | {s['parameters_full_rank']:,} | {s['full_rank_unpruned']['p50_ms']:.2f} ms "
            f"| {s['full_rank_unpruned']['p99_ms']:.2f} ms |",
            f"| full-rank, pruned | {s['parameters_full_rank']:,} | {s['full_rank_pruned']['p50_ms']:.2f} ms "
            f"| {s['full_rank_pruned']['p99_ms']:.2f} ms |",
            f"| low-rank (r_k {s['key_rank']}, r_v {s['value_rank']}), unpruned | {s['parameters_low_rank']:,} | "
            f"{s['low_rank_unpruned']['p50_ms']:.2f} ms | {s['low_rank_unpruned']['p99_ms']:.2f} ms |",
            f"| low-rank, pruned | {s['parameters_low_rank']:,} | {s['low_rank_pruned']['p50_ms']:.2f} ms "
            f"| {s['low_rank_pruned']['p99_ms']:.2f} ms |",
            "",
            f"Pruned + low-rank vs full-rank unpruned: **{s['speedup_p50']:.2f}x** at p50 (goal >= 2x); "
            f"pruned vs unpruned scores differ by at most {s['pruned_vs_full_max_abs_diff']:.1e}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0: default)")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--serve-threads", type=int, default=1, help="torch threads while timing the serving path")
    ap.add_argument("--seeds", type=int, default=4, help="training runs per model (seeds 0..N-1), AUC averaged")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="keep the reference results of the last run")
    ap.add_argument("--skip-serving", action="store_true", help="keep the serving results of the last run")
    ap.add_argument("--data", default=str(ROOT / "data" / "rank-sample"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench" / "ranking"))
    ap.add_argument("--frappe-source", default=str(FRAPPE_SOURCE), help="Frappe libfm file (../shared/data/frappe)")
    ap.add_argument("--frappe-split", default=str(ROOT / "data" / "frappe"), help="where its parts are written")
    ap.add_argument("--frappe-seeds", type=int, default=3)
    ap.add_argument("--frappe-minutes", type=float, default=10.0, help="training budget per Frappe run")
    ap.add_argument("--skip-frappe", action="store_true", help="keep the Frappe results of the last run")
    ap.add_argument("--frappe-archs", nargs="*", default=[], help="re-measure only these Frappe models")
    ap.add_argument("--sweep", action="store_true", help="re-run the Frappe settings sweep on the validation part")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if RESULTS.exists():  # keep the other part when only one is re-measured
        old = json.loads(RESULTS.read_text())
        keep = ("quality", "serving", "serving_criteo", "serving_frappe", "reference", "frappe", "frappe_sweep")
        res.update({k: v for k, v in old.items() if k in keep})
    src, split, runs = Path(args.frappe_source), Path(args.frappe_split), Path(args.runs)
    if args.sweep:
        print("frappe sweep (validation part only) ...", flush=True)
        res["frappe_sweep"] = bench_frappe_sweep(src, split, runs, args.threads, args.frappe_minutes)
    if not args.skip_frappe:
        print(f"frappe ({args.frappe_seeds} seeds per model) ...", flush=True)
        res["frappe"] = bench_frappe(
            src,
            split,
            runs,
            args.frappe_seeds,
            args.threads,
            args.frappe_minutes,
            tuple(args.frappe_archs),
            res.get("frappe"),
        )
    if not args.skip_serving:
        print("serving ...", flush=True)
        res["serving_frappe"] = bench_serving("frappe", args.candidates, args.repeat, args.serve_threads)
        res["serving"] = bench_serving("rank-sample", args.candidates, args.repeat, args.serve_threads)
        res["serving_criteo"] = bench_serving("criteo", args.candidates, args.repeat, args.serve_threads)
    if not args.skip_reference:
        print("reference (features alone) ...", flush=True)
        res["reference"] = bench_reference(Path(args.data))
    if not args.skip_quality:
        print(f"quality ({args.epochs} epochs, at most {args.minutes} min per model) ...", flush=True)
        res["quality"] = bench_quality(
            Path(args.data), args.epochs, args.minutes, Path(args.runs), args.threads, args.seeds
        )
    table = render(res)
    print(table)
    write_results(RESULTS, "ranking", "Ranking (`bench/ranking.py` → `bench/results/ranking.json`)", res, table)


if __name__ == "__main__":
    main()
