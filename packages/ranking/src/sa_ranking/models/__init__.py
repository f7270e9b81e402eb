"""Ranking models on torchrec: Hiformer and the two baselines (DCN-v2, logistic regression).

All three take ``(dense (B, D) float, sparse KeyedJaggedTensor)`` and return logits ``(B,)``; sparse
features go through one torchrec ``EmbeddingBagCollection`` (one table per feature, multi-hot pooled), so
``DistributedModelParallel`` can shard the tables.

Hiformer (Gui et al. 2023, arXiv 2311.05884): tokens = [task token, one embedding per sparse feature,
``dense_tokens`` embeddings projected from the dense vector]; ``num_layers`` Hiformer layers (heterogeneous
attention with composite low-rank key/value projections from the core, then a per-feature FFN, pre-norm
residuals); an MLP head on the task token. ``forward(..., prune=True)`` is the serving path: the last layer
computes the task token's query, attention row and FFN only (sec. 4.4) and gives the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
from torch import Tensor, nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from shared_attention.attention.heterogeneous import HeterogeneousAttention, PerTokenMlp, QueryIndex
from shared_attention.layers.mlp import Mlp

from ..schema import Schema

__all__ = [
    "ModelConfig",
    "FactorizationMachine",
    "Hiformer",
    "HiformerEncoder",
    "HiformerLayer",
    "DCNv2",
    "LogisticRegression",
    "build_model",
    "make_ebc",
    "FeatureDropout",
]

Arch = Literal["hiformer", "dcnv2", "lr", "fm"]


@dataclass(frozen=True)
class ModelConfig:
    """Which ranking model to build.

    Attributes:
        arch: ``hiformer``, ``dcnv2``, ``lr`` (logistic regression) or ``fm`` (factorisation machine).
        embedding_dim: width of every sparse embedding (and of Hiformer tokens).
        num_layers / num_heads / head_dim: Hiformer layers, heads and per-head width.
        key_rank / value_rank: ranks of the composite key/value projections (``null``: full rank).
        composite: Hiformer's composite projections (``false``: HeteroAtt's per-feature keys/values).
        dense_tokens: tokens the dense vector is projected into (0 when the schema has no dense column).
        ffn_hidden: hidden width of the per-feature FFN.
        mlp_dims: hidden widths of the MLP head (Hiformer) or deep tower (DCN-v2).
        dropout: dropout in FFN / head.
        cross_layers / cross_rank: DCN-v2 ``LowRankCrossNet`` depth and rank.
        prune_serving: score with the pruned last layer at inference (predictor).
        embedding_init_scale: embedding rows start uniform in ``[-s, s]`` (``null``: torchrec's default
            ``sqrt(1 / rows)``). ``0`` starts them at zero, so ids never seen in training stay neutral instead of
            random: Hiformer layer-normalises its tokens, which turns a small random row into full-scale noise.
        feature_dropout: ID dropout, ``{feature: rate}``: while training, each listed sparse feature's pooled
            embedding is replaced by zeros for that fraction of the examples (no rescaling: with
            ``embedding_init_scale: 0`` an id never seen in training *is* a zero row). Teaches the model a
            fallback for cold ids, e.g. ``{user: 0.5}`` when most evaluation users are new.
        fm_term: Hiformer only: add a factorisation-machine term to the logit (DeepFM-style, sharing the token
            embeddings): first-order weights per id (a width-4 table, as :class:`LogisticRegression`) plus the
            pairwise ``sum_{i<j} <e_i, e_j>`` of the sparse embeddings, a cheap direct path for the
            id-pair memorisation that dominates logs such as Frappe.
    """

    arch: Arch = "hiformer"
    embedding_dim: int = 16
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 8
    key_rank: int | None = 32
    value_rank: int | None = 32
    composite: bool = True
    dense_tokens: int = 1
    ffn_hidden: int = 64
    mlp_dims: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    cross_layers: int = 3
    cross_rank: int = 32
    prune_serving: bool = True
    embedding_init_scale: float | None = None
    feature_dropout: dict[str, float] = field(default_factory=dict)
    fm_term: bool = False


def fm_pairwise(v: Tensor) -> Tensor:
    """``(B, S, d)`` field factors -> ``(B,)`` ``sum_{i<j} <v_i, v_j>`` via ``0.5 (|sum v|^2 - sum |v|^2)``."""
    return 0.5 * (v.sum(1).square() - v.square().sum(1)).sum(-1)


class FeatureDropout(nn.Module):
    """ID dropout on pooled sparse embeddings ``(B, S w)``: zeroes feature ``s`` of an example with ``rates[s]``.

    Identity in eval mode and when every rate is 0. No rescaling (zero is the "unknown id" embedding).

    Args:
        schema: the features (order of the ``S`` pooled embeddings). rates: ``{feature name: rate in [0, 1)}``.
        width: embedding width ``w`` of every feature.
    """

    def __init__(self, schema: Schema, rates: dict[str, float], width: int) -> None:
        super().__init__()
        names = [f.name for f in schema.sparse]
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise ValueError(f"model.feature_dropout: unknown sparse feature(s) {unknown}; features: {names}")
        bad = {k: v for k, v in rates.items() if not 0.0 <= float(v) < 1.0}
        if bad:
            raise ValueError(f"model.feature_dropout: rates must be in [0, 1), got {bad}")
        self.rates = [float(rates.get(n, 0.0)) for n in names]
        self.width = width

    def forward(self, emb: Tensor) -> Tensor:
        if not self.training or not any(self.rates):
            return emb
        b, s = emb.shape[0], len(self.rates)
        rates = torch.tensor(self.rates, dtype=emb.dtype, device=emb.device)  # (S,)
        keep = (torch.rand(b, s, device=emb.device, dtype=emb.dtype) >= rates).to(emb.dtype)  # (B, S)
        return (emb.reshape(b, s, self.width) * keep.unsqueeze(-1)).reshape(b, s * self.width)  # (B, S w)

    def extra_repr(self) -> str:
        return f"rates={self.rates}"


def make_ebc(
    schema: Schema,
    dim: int,
    device: torch.device | str | None = None,
    init_scale: float | None = None,
    prefix: str = "t_",
) -> EmbeddingBagCollection:
    """One table ``<prefix><feature>`` per sparse feature (mean pooling for multi-hot fields that ask for it).

    ``init_scale``: rows start uniform in ``[-init_scale, init_scale]`` (``None``: torchrec's default).
    """
    if init_scale is not None and init_scale < 0:
        raise ValueError(f"model.embedding_init_scale must be >= 0, got {init_scale}")
    bounds = {} if init_scale is None else {"weight_init_min": -init_scale, "weight_init_max": init_scale}
    tables = [
        EmbeddingBagConfig(
            name=f"{prefix}{f.name}",
            embedding_dim=dim,
            num_embeddings=f.num_embeddings,
            feature_names=[f.name],
            pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            **bounds,
        )
        for f in schema.sparse
    ]
    return EmbeddingBagCollection(tables=tables, device=torch.device(device) if device else None)


def _mlp_tower(in_dim: int, dims: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d in dims:
        layers += [nn.Linear(in_dim, d), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = d
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class HiformerLayer(nn.Module):
    """``x = x + attn(LN(x))``; ``x = x + ffn(LN(x))`` with heterogeneous attention and a per-feature FFN.

    With ``query_index`` only those tokens are updated and returned (keys/values still see every token).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        num_heads: int,
        head_dim: int,
        key_rank: int | None,
        value_rank: int | None,
        ffn_hidden: int,
        dropout: float = 0.0,
        composite: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = HeterogeneousAttention(
            num_tokens,
            dim,
            num_heads,
            head_dim,
            composite=composite,
            key_rank=key_rank if composite else None,
            value_rank=value_rank if composite else None,
        )
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = PerTokenMlp(num_tokens, dim, ffn_hidden, dropout)

    def forward(self, x: Tensor, query_index: QueryIndex = None, token_major: bool = True) -> Tensor:
        """``x``: token-major ``(L, B, d)`` (the encoder's layout), or ``(B, L, d)`` with ``token_major=False``.

        Returns ``(L, B, d)`` or ``(Lq, B, d)`` (``(B, L, d)`` / ``(B, Lq, d)`` batch-major).
        """
        h = self.norm1(x)  # (L, B, d) / (B, L, d)
        if query_index is not None:
            x = x[list(query_index)] if token_major else x[:, list(query_index)]  # (Lq, B, d) / (B, Lq, d)
        if self.attn.explicit:  # the reference pattern: each residual added on its own
            x = x + self.attn(h, query_index, token_major=token_major)
            return x + self.ffn(self.norm2(x), query_index, token_major=token_major)  # (Lq, B, d) / (B, Lq, d)
        # the residuals accumulated by the output products (one pass over the tokens fewer each)
        x = self.attn(h, query_index, token_major=token_major, residual=x)  # (Lq, B, d) / (B, Lq, d)
        return self.ffn(self.norm2(x), query_index, token_major=token_major, residual=x)  # (Lq, B, d) / (B, Lq, d)


class HiformerEncoder(nn.Module):
    """The Hiformer layers, final norm and MLP head on the task token (token 0): ``(L, B, d) -> (B,)`` logits.

    Activations stay token-major inside (every per-feature product is one batched matrix product, no copies);
    :meth:`Hiformer.tokens` gives the ``(B, L, d)`` view.
    """

    def __init__(self, num_tokens: int, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.layers = nn.ModuleList(
            HiformerLayer(
                num_tokens,
                d,
                cfg.num_heads,
                cfg.head_dim,
                cfg.key_rank,
                cfg.value_rank,
                cfg.ffn_hidden,
                cfg.dropout,
                cfg.composite,
            )
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = Mlp(d, cfg.mlp_dims[0] if cfg.mlp_dims else d, 1, act_layer=nn.ReLU, drop=cfg.dropout)
        self.naive = False

    def set_naive(self, naive: bool) -> None:
        """The reference pattern (tests, ``bench/speed.py``): batch-major ``(B, L, d)`` activations, so every
        per-token product transposes, and step-by-step softmax attention. Same result as the default path."""
        self.naive = naive
        for layer in self.layers:
            cast(HiformerLayer, layer).attn.explicit = naive

    def forward(self, x: Tensor, prune: bool = False) -> Tensor:
        """``x``: token-major tokens ``(L, B, d)`` (every per-token product then runs without a copy)."""
        n = len(self.layers)
        if self.naive:
            x = x.transpose(0, 1)  # (B, L, d)
            for i, layer in enumerate(self.layers):
                x = layer(x, [0] if prune and i == n - 1 else None, token_major=False)  # (B, L, d) / (B, 1, d)
            return self.head(self.norm(x[:, 0])).squeeze(-1)  # (B,)
        for i, layer in enumerate(self.layers):
            x = layer(x, [0] if prune and i == n - 1 else None)  # (L, B, d), or (1, B, d) pruned
        return self.head(self.norm(x[0])).squeeze(-1)  # (B,)


class Hiformer(nn.Module):
    """Hiformer ranking model.

    Args:
        schema: the features (one token per sparse feature). cfg: sizes (see :class:`ModelConfig`).
        device: where to allocate the embedding tables (``"meta"`` to let DMP materialise them sharded).
    """

    def __init__(self, schema: Schema, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.num_dense = len(schema.dense)
        self.dense_tokens = cfg.dense_tokens if self.num_dense else 0
        self.num_sparse = len(schema.sparse)
        self.num_tokens = 1 + self.num_sparse + self.dense_tokens
        self.embedding_dim = d
        self.prune = False
        self.ebc = make_ebc(schema, d, device, cfg.embedding_init_scale)
        self.feature_dropout = FeatureDropout(schema, cfg.feature_dropout, d)
        self.dense_proj = nn.Linear(self.num_dense, self.dense_tokens * d) if self.dense_tokens else None
        self.task_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.encoder = HiformerEncoder(self.num_tokens, cfg)
        # optional FM term (model.fm_term): first-order id weights + pairwise products of the sparse embeddings
        self.first_order = (
            make_ebc(schema, LogisticRegression.table_width, device, 0.0, prefix="fm_") if cfg.fm_term else None
        )

    def set_naive(self, naive: bool) -> None:
        """Switch the encoder to the reference pattern and back (see :meth:`HiformerEncoder.set_naive`)."""
        self.encoder.set_naive(naive)

    def tokens(self, dense: Tensor, sparse: KeyedJaggedTensor) -> Tensor:
        """``(B, L, d)``: task token, sparse embeddings, dense tokens."""
        return self._tokens(dense, sparse)[0].transpose(0, 1)

    def _tokens(self, dense: Tensor, sparse: KeyedJaggedTensor) -> tuple[Tensor, Tensor]:
        """Token-major tokens ``(L, B, d)`` (the encoder's layout) and the sparse embeddings ``(B, S, d)``."""
        emb = self.feature_dropout(self.ebc(sparse).values())  # (B, S d)
        b = emb.shape[0]
        fields = emb.reshape(b, self.num_sparse, self.embedding_dim)  # (B, S, d)
        parts = [self.task_token.expand(1, b, -1), fields.transpose(0, 1)]
        if self.dense_proj is not None:
            parts.append(self.dense_proj(dense).reshape(b, self.dense_tokens, self.embedding_dim).transpose(0, 1))
        return torch.cat(parts, dim=0), fields  # (L, B, d), (B, S, d)

    def forward(self, dense: Tensor, sparse: KeyedJaggedTensor, prune: bool | None = None) -> Tensor:
        """Logits ``(B,)``; ``prune`` (default: ``self.prune``) computes only the task token in the last layer."""
        prune = self.prune if prune is None else prune
        tokens, fields = self._tokens(dense, sparse)  # (L, B, d)
        if self.first_order is None:
            return self.encoder(tokens, prune)  # (B,)
        # the FM term first, while the embeddings it reads are still in cache
        fm = self.first_order(sparse).values().sum(1) + fm_pairwise(fields)  # (B,)
        return self.encoder(tokens, prune) + fm  # (B,)


class DCNv2(nn.Module):
    """DCN-v2 (Wang et al. 2021), stacked: torchrec ``LowRankCrossNet`` on [dense, embeddings], then a deep tower."""

    def __init__(self, schema: Schema, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        from torchrec.modules.crossnet import LowRankCrossNet

        self.ebc = make_ebc(schema, cfg.embedding_dim, device, cfg.embedding_init_scale)
        self.feature_dropout = FeatureDropout(schema, cfg.feature_dropout, cfg.embedding_dim)
        width = len(schema.dense) + len(schema.sparse) * cfg.embedding_dim
        self.cross = LowRankCrossNet(width, cfg.cross_layers, cfg.cross_rank)
        self.deep = _mlp_tower(width, cfg.mlp_dims, cfg.dropout)

    def forward(self, dense: Tensor, sparse: KeyedJaggedTensor) -> Tensor:
        x = torch.cat([dense, self.feature_dropout(self.ebc(sparse).values())], dim=1)  # (B, D + S d)
        return self.deep(self.cross(x)).squeeze(-1)  # (B,)


class LogisticRegression(nn.Module):
    """Logistic regression: one weight per id and per dense column.

    An id's weight is the sum of its row in a width-4 table (fbgemm's kernels need widths divisible by 4);
    the model class is exactly logistic regression on one-hot ids (each id still has one free scalar).
    """

    table_width = 4

    def __init__(self, schema: Schema, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.ebc = make_ebc(schema, self.table_width, device, cfg.embedding_init_scale)
        self.feature_dropout = FeatureDropout(schema, cfg.feature_dropout, self.table_width)
        self.linear = nn.Linear(len(schema.dense), 1) if schema.dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, dense: Tensor, sparse: KeyedJaggedTensor) -> Tensor:
        logit = self.feature_dropout(self.ebc(sparse).values()).sum(1) + self.bias  # (B,)
        if self.linear is not None:
            logit = logit + self.linear(dense).squeeze(-1)
        return logit


class FactorizationMachine(nn.Module):
    """Factorisation machine (Rendle 2010): ``bias + sum_i w_i + sum_{i<j} <v_i, v_j>`` over the sparse fields,
    plus a linear term for dense columns.

    One embedding table per field holds ``[w | v]``: the first 4 columns sum to the first-order weight ``w``
    (fbgemm's kernels need widths divisible by 4, as in :class:`LogisticRegression`), the other
    ``embedding_dim`` columns are the factor ``v``. The pairwise term uses the identity
    ``sum_{i<j} <v_i, v_j> = 0.5 * (|sum_i v_i|^2 - sum_i |v_i|^2)`` (per factor dimension), linear in the fields.

    Note: at ``v = 0`` the pairwise term has zero gradient, so the factors need a non-zero start
    (``model.embedding_init_scale > 0``; the Frappe config uses 0.01).
    """

    first_order_width = 4

    def __init__(self, schema: Schema, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        if cfg.embedding_init_scale == 0:
            raise ValueError("model.arch=fm needs model.embedding_init_scale > 0 (zero factors never train)")
        self.dim = cfg.embedding_dim
        self.num_sparse = len(schema.sparse)
        self.ebc = make_ebc(schema, self.first_order_width + self.dim, device, cfg.embedding_init_scale)
        self.feature_dropout = FeatureDropout(schema, cfg.feature_dropout, self.first_order_width + self.dim)
        self.linear = nn.Linear(len(schema.dense), 1) if schema.dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, dense: Tensor, sparse: KeyedJaggedTensor) -> Tensor:
        emb = self.feature_dropout(self.ebc(sparse).values())  # (B, S (4 + d))
        e = emb.reshape(emb.shape[0], self.num_sparse, self.first_order_width + self.dim)  # (B, S, 4 + d)
        first = e[..., : self.first_order_width].sum(dim=(1, 2))  # (B,)
        v = e[..., self.first_order_width :]  # (B, S, d)
        pairwise = fm_pairwise(v)  # (B,)
        logit = self.bias + first + pairwise
        if self.linear is not None:
            logit = logit + self.linear(dense).squeeze(-1)
        return logit


MODELS: dict[str, type[nn.Module]] = {
    "hiformer": Hiformer,
    "dcnv2": DCNv2,
    "lr": LogisticRegression,
    "fm": FactorizationMachine,
}


def build_model(schema: Schema, cfg: ModelConfig, device: torch.device | str | None = None) -> nn.Module:
    """The model named by ``cfg.arch``."""
    if cfg.arch not in MODELS:
        raise ValueError(f"model.arch: unknown architecture {cfg.arch!r}; choose from {sorted(MODELS)}")
    return MODELS[cfg.arch](schema, cfg, device)
