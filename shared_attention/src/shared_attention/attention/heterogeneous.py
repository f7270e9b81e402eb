"""Heterogeneous per-feature attention (HeteroAtt / Hiformer) with low-rank composite projections.

Implements "Hiformer: Heterogeneous Feature Interactions Learning with Transformers for Recommender
Systems" (Gui et al., 2023, arXiv 2311.05884), section 4. Each of the ``L`` tokens (one per feature, plus
dense and task tokens) has its own projections, so every feature pair gets its own bilinear interaction.

Heterogeneous self-attention (sec. 4.2, eq. 5)::

    att_h(i, j) = softmax_j( (e_i Q_i^h) (e_j K_j^h)^T / sqrt(d_k) )
    o_i = concat_h( sum_j att_h(i, j) e_j V_j^h ) O_i

Hiformer (sec. 4.3, eq. 6-7): keys and values are computed from the concatenation of all tokens
``ê = [e_1, ..., e_L]`` (width ``L d``) through one composite projection per head,
``[k_1^h, ..., k_L^h] = ê W_K^h`` with ``W_K`` of shape ``(L d, L H d_k)`` (same for values), so a key sees
every feature. For efficiency the composite matrices are factorised ``W_K = U_K V_K`` with rank ``r_k``
(``W_V`` with rank ``r_v``). Queries stay per feature.

Query pruning (sec. 4.4): in the last layer only the task token's output is needed, so ``forward`` takes
``query_index`` and computes the queries, attention rows and output projections of those tokens only;
keys and values still use every token, so the pruned rows equal the corresponding rows of the full output.

:class:`PerTokenLinear` / :class:`PerTokenMlp` are the per-feature projections and feed-forward network
(each token its own weights), also used by the Hiformer layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from .multihead import scaled_dot_product

__all__ = ["PerTokenLinear", "PerTokenMlp", "HeterogeneousAttention", "QueryIndex"]

QueryIndex = Sequence[int] | Tensor | None


def _as_index(query_index: QueryIndex, device: torch.device) -> Tensor | None:
    if query_index is None:
        return None
    idx = torch.as_tensor(query_index, dtype=torch.long, device=device)
    if idx.ndim != 1:
        raise ValueError(f"query_index must be one-dimensional, got shape {tuple(idx.shape)}")
    return idx


class PerTokenLinear(nn.Module):
    """A separate linear map for each of ``num_tokens`` tokens: ``y_i = x_i W_i + b_i``.

    Args:
        num_tokens: number of tokens ``L``. in_features / out_features: widths. bias: add ``b_i``.

    Parameters: ``weight`` ``(L, in, out)`` and ``bias`` ``(L, out)``, initialised like ``nn.Linear``.
    """

    def __init__(self, num_tokens: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_tokens, self.in_features, self.out_features = num_tokens, in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_tokens, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_tokens, out_features).uniform_(-bound, bound)) if bias else None

    def forward(
        self, x: Tensor, token_index: QueryIndex = None, token_major: bool = False, residual: Tensor | None = None
    ) -> Tensor:
        """``x``: ``(B, L', in)`` where ``L'`` is ``L`` or ``len(token_index)`` (the tokens' own weights).

        With ``token_major=True`` ``x`` is ``(L', B, in)`` and the result ``(L', B, out)``: the layout the batched
        matrix product works in, so a stack of these layers runs without transposing copies.
        ``residual`` (same shape as the result): returns ``residual + layer(x)``, accumulated by the batched
        product itself (one pass over the output fewer than adding afterwards).
        """
        idx = _as_index(token_index, x.device)
        w = self.weight if idx is None else self.weight.index_select(0, idx)  # (L', in, out)
        n_tok = x.shape[0] if token_major else x.shape[1]
        if x.ndim != 3 or n_tok != w.shape[0]:
            raise ValueError(f"expected {w.shape[0]} tokens, got input of shape {tuple(x.shape)}")
        xt = x if token_major else x.transpose(0, 1)  # (L', B, in)
        if residual is not None and (torch.is_autocast_enabled(x.device.type) or residual.dtype != w.dtype):
            # autocast does not reach in-place products: add the residual to the (lower-precision) result
            return residual + self.forward(x, token_index, token_major)
        if residual is not None:
            r = residual if token_major else residual.transpose(0, 1)  # (L', B, out)
            if self.bias is not None:
                b = self.bias if idx is None else self.bias.index_select(0, idx)
                r = r + b.unsqueeze(1)  # a fresh tensor: safe to accumulate into
            else:
                r = r.clone()
            y = r.baddbmm_(xt, w)  # (L', B, out)
            return y if token_major else y.transpose(0, 1)
        if self.bias is None:
            y = torch.bmm(xt, w)  # (L', B, out)
        else:
            b = self.bias if idx is None else self.bias.index_select(0, idx)
            y = torch.baddbmm(b.unsqueeze(1), xt, w)  # bias fused: (L', B, out)
        return y if token_major else y.transpose(0, 1)  # (L', B, out) or (B, L', out)

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, in={self.in_features}, out={self.out_features}"


class PerTokenMlp(nn.Module):
    """Per-feature feed-forward network: ``fc2_i(drop(act(fc1_i(x_i))))`` with each token's own weights.

    Args:
        num_tokens: ``L``. dim: token width. hidden: hidden width. drop: dropout. act_layer: activation.
    """

    def __init__(
        self, num_tokens: int, dim: int, hidden: int, drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.fc1 = PerTokenLinear(num_tokens, dim, hidden)
        self.act = act_layer()
        self.fc2 = PerTokenLinear(num_tokens, hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(
        self, x: Tensor, token_index: QueryIndex = None, token_major: bool = False, residual: Tensor | None = None
    ) -> Tensor:
        """``x``: ``(B, L', dim)``, or ``(L', B, dim)`` with ``token_major`` (see :class:`PerTokenLinear`).

        ``residual``: returns ``residual + mlp(x)`` (fused into the second product when no dropout is active).
        """
        h = self.drop(self.act(self.fc1(x, token_index, token_major)))  # (B, L', hidden) / (L', B, hidden)
        if residual is not None and not (self.training and self.drop.p > 0):
            return self.fc2(h, token_index, token_major, residual)  # (B, L', dim) / (L', B, dim)
        y = self.drop(self.fc2(h, token_index, token_major))  # (B, L', dim) / (L', B, dim)
        return y if residual is None else residual + y


class HeterogeneousAttention(nn.Module):
    """Heterogeneous multi-head self-attention over ``L`` feature tokens (HeteroAtt and Hiformer).

    Args:
        num_tokens: number of tokens ``L`` (fixed: every token has its own parameters).
        dim: token width ``d``.
        num_heads: heads ``H``.
        head_dim: key/query/value width per head ``d_k`` (default ``dim // num_heads``).
        composite: ``False``: per-token keys/values ``e_j K_j`` (HeteroAtt, eq. 5). ``True``: Hiformer's
            composite key/value projection of the concatenation of all tokens (eq. 6).
        key_rank / value_rank: rank of the factorised composite key / value projection (``None``: full
            ``(L d) x (L H d_k)`` matrices). Only with ``composite=True``.
        bias: biases in the projections.
        attn_drop: dropout on the attention weights (training only).

    Attribute ``explicit`` (default ``False``): compute ``softmax(q k^T / sqrt(d_k)) v`` step by step instead of
    the fused kernel (the reference pattern for tests and benchmarks; same result).

    Parameters: ``q`` / ``o`` (:class:`PerTokenLinear`); ``k`` / ``v`` as :class:`PerTokenLinear` when not
    composite, else ``k`` / ``v`` (``nn.Linear(L d, L H d_k)``) at full rank or ``k_down`` / ``k_up`` (and
    ``v_down`` / ``v_up``) ``nn.Linear(L d, r)`` then ``nn.Linear(r, L H d_k)`` at low rank.
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        num_heads: int = 1,
        head_dim: int | None = None,
        composite: bool = True,
        key_rank: int | None = None,
        value_rank: int | None = None,
        bias: bool = True,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; give head_dim")
            head_dim = dim // num_heads
        if not composite and (key_rank is not None or value_rank is not None):
            raise ValueError("key_rank/value_rank need composite=True")
        for name, r in (("key_rank", key_rank), ("value_rank", value_rank)):
            if r is not None and r < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {r}")
        self.num_tokens, self.dim, self.num_heads, self.head_dim = num_tokens, dim, num_heads, head_dim
        self.composite, self.key_rank, self.value_rank = composite, key_rank, value_rank
        self.attn_drop = attn_drop
        self.explicit = False
        inner = num_heads * head_dim
        self.q = PerTokenLinear(num_tokens, dim, inner, bias)
        if composite:
            flat_in, flat_out = num_tokens * dim, num_tokens * inner
            for name, r in (("k", key_rank), ("v", value_rank)):
                if r is None:
                    setattr(self, name, nn.Linear(flat_in, flat_out, bias=bias))
                else:
                    setattr(self, f"{name}_down", nn.Linear(flat_in, r, bias=False))
                    setattr(self, f"{name}_up", nn.Linear(r, flat_out, bias=bias))
        else:
            self.k = PerTokenLinear(num_tokens, dim, inner, bias)
            self.v = PerTokenLinear(num_tokens, dim, inner, bias)
        self.o = PerTokenLinear(num_tokens, inner, dim, bias)

    def _head_major(self, layer: nn.Linear, x: Tensor) -> Tensor:
        """``layer(x)`` with its outputs in ``(H, L, d_k)`` order instead of the parameters' ``(L, H, d_k)``.

        The rows of the (small) weight are permuted on the fly, so the keys / values come out ``(B, H, L, d_k)``
        contiguous: the attention kernels then read them without a transposing copy (and their gradients flow
        back without one); the parameters and the state dict keep the published layout.
        """
        n, h, dk = self.num_tokens, self.num_heads, self.head_dim
        if self.explicit:  # the reference pattern: the published (L, H, d_k) order, transposed by the caller
            return cast(Tensor, layer(x))  # (B, L H d_k)
        w = layer.weight.reshape(n, h, dk, -1).transpose(0, 1).reshape(n * h * dk, -1)  # (H L d_k, in)
        b = None if layer.bias is None else layer.bias.reshape(n, h, dk).transpose(0, 1).reshape(-1)  # (H L d_k,)
        return nn.functional.linear(x, w, b)  # (B, H L d_k)

    def _composite(self, name: str, flat: Tensor) -> Tensor:
        """Composite keys or values ``(B, H L d_k)`` (head-major) of the flattened tokens ``(B, L d)``."""
        rank = self.key_rank if name == "k" else self.value_rank
        if rank is None:
            return self._head_major(getattr(self, name), flat)  # (B, H L d_k)
        return self._head_major(getattr(self, f"{name}_up"), getattr(self, f"{name}_down")(flat))  # (B, H L d_k)

    def keys_values(self, x: Tensor, token_major: bool = False) -> tuple[Tensor, Tensor]:
        """Keys and values of every token, each ``(B, H, L, d_k)`` (a strided view; ``x`` as in :meth:`forward`)."""
        if token_major:
            n, b, d = x.shape
        else:
            b, n, d = x.shape
        if self.composite:
            flat = (x.transpose(0, 1) if token_major else x).reshape(b, n * d)  # (B, L d)
            if self.key_rank is not None and self.value_rank is not None:
                # both down-projections in one product (one pass over the widest operand)
                k_down, v_down = cast(nn.Linear, self.k_down), cast(nn.Linear, self.v_down)
                w_down = torch.cat([k_down.weight, v_down.weight])  # (r_k + r_v, L d)
                z = flat @ w_down.t()  # (B, r_k + r_v)
                k = self._head_major(cast(nn.Linear, self.k_up), z[:, : self.key_rank])  # (B, H L d_k)
                v = self._head_major(cast(nn.Linear, self.v_up), z[:, self.key_rank :])  # (B, H L d_k)
            else:
                k, v = self._composite("k", flat), self._composite("v", flat)  # (B, H L d_k)
            if self.explicit:
                k = k.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d_k) strided
                v = v.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d_k)
                return k, v
            k = k.view(b, self.num_heads, n, self.head_dim)  # (B, H, L, d_k) contiguous
            v = v.view(b, self.num_heads, n, self.head_dim)  # (B, H, L, d_k)
            return k, v
        k, v = self.k(x, None, token_major), self.v(x, None, token_major)  # (B, L, H d_k) / (L, B, H d_k)
        return self._heads(k, token_major), self._heads(v, token_major)  # (B, H, L, d_k)

    def _heads(self, t: Tensor, token_major: bool) -> Tensor:
        """``(B, L, H d_k)`` or ``(L, B, H d_k)`` -> ``(B, H, L, d_k)`` (a view)."""
        if token_major:
            n, b, _ = t.shape
            return t.view(n, b, self.num_heads, self.head_dim).permute(1, 2, 0, 3)  # (B, H, L, d_k)
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d_k)

    def forward(
        self, x: Tensor, query_index: QueryIndex = None, token_major: bool = False, residual: Tensor | None = None
    ) -> Tensor:
        """``x``: ``(B, L, d)``. Returns ``(B, L, d)``, or ``(B, len(query_index), d)`` for those tokens only.

        With ``token_major=True`` input and output are ``(L, B, d)`` / ``(Lq, B, d)``: a stack of layers kept in
        that layout (the Hiformer encoder) does its per-token products without a transposing copy each.
        ``residual`` (the output's shape): returns ``residual + attention``, accumulated by the output projection.
        """
        n, b, d = (x.shape if token_major else x.transpose(0, 1).shape) if x.ndim == 3 else (-1, -1, -1)
        if n != self.num_tokens or d != self.dim:
            want = f"({self.num_tokens}, B, {self.dim})" if token_major else f"(B, {self.num_tokens}, {self.dim})"
            raise ValueError(f"expected {want}, got {tuple(x.shape)}")
        idx = _as_index(query_index, x.device)
        tok_dim = 0 if token_major else 1
        xq = x if idx is None else x.index_select(tok_dim, idx)  # (B, Lq, d) / (Lq, B, d)
        lq = xq.shape[tok_dim]
        q = self._heads(self.q(xq, idx, token_major), token_major)  # (B, H, Lq, d_k)
        k, v = self.keys_values(x, token_major)  # (B, H, L, d_k)
        p = self.attn_drop if self.training else 0.0
        out, _ = scaled_dot_product(q, k, v, dropout_p=p, need_weights=self.explicit)  # (B, H, Lq, d_k)
        inner = self.num_heads * self.head_dim
        if token_major:
            out = out.permute(2, 0, 1, 3).reshape(lq, b, inner)  # (Lq, B, H d_k)
        else:
            out = out.transpose(1, 2).reshape(b, lq, inner)  # (B, Lq, H d_k)
        return self.o(out, idx, token_major, residual)  # (B, Lq, d) / (Lq, B, d)

    def extra_repr(self) -> str:
        return (
            f"tokens={self.num_tokens}, dim={self.dim}, heads={self.num_heads}, head_dim={self.head_dim}, "
            f"composite={self.composite}, key_rank={self.key_rank}, value_rank={self.value_rank}"
        )
