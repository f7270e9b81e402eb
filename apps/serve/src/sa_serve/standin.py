"""A documented *stand-in* ranking predictor for load tests while the real ``sa_ranking`` predictor is built.

It follows the ranking serving contract exactly (``preprocess`` takes a list of candidate dicts, ``postprocess``
returns ``{"scores": [...]}`` in input order) and has the per-call cost profile of a small Hiformer-style
feature-interaction ranker on CPU: every candidate's features become tokens (one embedding per sparse field,
hashed ids, mean-pooled multi-valued ``genres``, a projection of the dense fields), two pre-norm transformer
blocks of the shared core attend across the feature tokens, and an MLP scores the flattened result. It is
randomly initialised (its scores mean nothing); only its cost matters. The default fields are those of the
offline MovieLens sample (``data/rank-sample/candidates.jsonl``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from shared_attention.layers.blocks import TransformerBlock
from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase

__all__ = ["RandomHiformerRanker", "StandInRanker", "StandInRankingModel"]

SPARSE = ("user", "item", "age", "gender", "occupation", "zip", "year")
DENSE = ("age_n", "year_n")
MULTI = "genres"


class StandInRankingModel(nn.Module):
    """Feature tokens -> transformer blocks across features -> MLP score.

    Args:
        n_sparse: sparse fields. n_dense: dense fields. buckets: hash buckets per field. dim: token width.
        depth: transformer blocks. heads: attention heads.
    """

    def __init__(
        self, n_sparse: int, n_dense: int, buckets: int = 4096, dim: int = 64, depth: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.sparse = nn.ModuleList(nn.Embedding(buckets, dim) for _ in range(n_sparse))
        self.multi = nn.EmbeddingBag(64, dim, mode="mean")
        self.dense = nn.Linear(n_dense, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio=2.0) for _ in range(depth))
        n_tokens = n_sparse + 2
        self.head = nn.Sequential(
            nn.LayerNorm(n_tokens * dim), nn.Linear(n_tokens * dim, 256), nn.GELU(), nn.Linear(256, 1)
        )

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor, multi: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        # ids: (N, S) int64, dense: (N, D), multi: (M,) int64 with offsets (N,)
        tokens = [emb(ids[:, i]) for i, emb in enumerate(self.sparse)]  # S x (N, C)
        tokens.append(self.multi(multi, offsets))  # (N, C)
        tokens.append(self.dense(dense))  # (N, C)
        x = torch.stack(tokens, dim=1)  # (N, S + 2, C)
        for blk in self.blocks:
            x = blk(x)  # (N, S + 2, C)
        return self.head(x.flatten(1)).squeeze(-1)  # (N,)


def _bucket(value: Any, buckets: int) -> int:
    return zlib.crc32(str(value).encode()) % buckets


class StandInRanker(PredictorBase):
    """Serves :class:`StandInRankingModel` (random weights) under the ranking contract; see the module docstring.

    Args:
        sparse: sparse field names. dense: dense field names. seed: weight seed.
    """

    model: StandInRankingModel
    domain: ClassVar[str] = "ranking"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "candidates",
                "json",
                ("application/json", "application/x-ndjson"),
                "list of objects",
                "STAND-IN (random weights): MovieLens-style candidate rows",
                {
                    "example": [
                        {
                            "user": 3,
                            "item": 323,
                            "age": 23,
                            "gender": 0,
                            "occupation": 20,
                            "zip": "32067",
                            "year": 97,
                            "genres": "0|15",
                            "age_n": 0.23,
                            "year_n": 0.97,
                        },
                        {
                            "user": 3,
                            "item": 335,
                            "age": 23,
                            "gender": 0,
                            "occupation": 20,
                            "zip": "32067",
                            "year": 97,
                            "genres": "4",
                            "age_n": 0.23,
                            "year_n": 0.97,
                        },
                    ]
                },
            ),
        ),
        outputs=(FieldSpec("scores", "json", ("application/json",), "(N,) float", "one score per candidate"),),
    )

    def __init__(
        self, sparse: Sequence[str] = SPARSE, dense: Sequence[str] = DENSE, seed: int = 0, buckets: int = 4096
    ) -> None:
        torch.manual_seed(seed)
        self.sparse_fields, self.dense_fields, self.buckets = tuple(sparse), tuple(dense), buckets
        self.model = StandInRankingModel(len(self.sparse_fields), len(self.dense_fields), buckets).eval()

    @classmethod
    def load(cls, run_dir: Any = None, device: Any = "cpu") -> StandInRanker:
        """No weights: a stand-in (``run_dir`` is ignored)."""
        return cls()

    def preprocess(self, raw: Any) -> dict[str, torch.Tensor]:
        if not isinstance(raw, list) or not raw:
            raise InputError("expected a non-empty list of candidate objects", "candidates")
        ids, dense, offsets = [], [], []
        multi: list[int] = []
        for i, row in enumerate(raw):
            where = f"candidates[{i}]"
            if not isinstance(row, dict):
                raise InputError("must be an object", where)
            try:
                ids.append([_bucket(row[f], self.buckets) for f in self.sparse_fields])
                vals = [row[f] for f in self.dense_fields]
            except KeyError as exc:
                raise InputError(f"missing field {exc.args[0]!r}", where) from None
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
                raise InputError(f"dense fields {list(self.dense_fields)} must be numbers", where)
            dense.append(vals)
            offsets.append(len(multi))
            multi.extend(_bucket(g, 64) for g in str(row.get(MULTI, "")).split("|"))
        return {
            "ids": torch.tensor(ids),
            "dense": torch.tensor(dense, dtype=torch.float32),
            "multi": torch.tensor(multi),
            "offsets": torch.tensor(offsets),
        }

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["ids"], batch["dense"], batch["multi"], batch["offsets"])  # (N,)

    def postprocess(self, output: torch.Tensor) -> dict[str, Any]:
        return {"scores": [float(s) for s in output]}


class RandomHiformerRanker:
    """The real ``sa_ranking`` predictor and Hiformer model with *untrained* weights (no run folder needed).

    ``load(folder)`` reads ``folder/schema.json`` (e.g. the offline ``data/rank-sample``) and builds
    ``sa_ranking.predictor.RankingPredictor`` around ``build_model(schema, ModelConfig())``: the exact per-call
    cost of the real serving path (row parsing, torchrec batch, embedding bags, Hiformer layers) with
    meaningless scores. For load tests until a trained ranking run exists.
    """

    @classmethod
    def load(cls, run_dir: Any, device: Any = "cpu") -> Any:
        """``run_dir``: a folder with ``schema.json``."""
        from pathlib import Path

        from sa_ranking.models import ModelConfig, build_model
        from sa_ranking.predictor import RankingPredictor
        from sa_ranking.schema import load_schema

        if run_dir is None:
            raise ValueError("RandomHiformerRanker needs a folder holding schema.json (e.g. data/rank-sample)")
        torch.manual_seed(0)
        schema = load_schema(Path(run_dir) / "schema.json")
        return RankingPredictor(build_model(schema, ModelConfig()), schema, device=device)
