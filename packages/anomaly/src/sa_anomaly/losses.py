"""FOD's training objective (Yao et al. 2023, sec. 3.5; official ``losses.py`` / ``Trainer.train``).

Reconstruction ``MSE + mean(1 - cos)`` plus the two-phase minimax of symmetric KL terms between the learned
correlations ``P`` (attention) and the row-normalised RBF targets ``Q`` with an entropy constraint. The two
official losses are backpropagated into the same gradients before one optimizer step, so their sum is
returned as ``loss`` (identical gradients; stop-gradients select which side each term trains).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .models.fod import FODOutput

__all__ = ["EPS", "kl_rows", "symmetric_kl_rows", "entropy_rows", "reconstruction_loss", "fod_loss"]

EPS = 1e-4


def kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p || q)`` per row with ``log(. + 1e-4)``, averaged over heads: ``(B, H, L, S)`` -> ``(B, L)``."""
    return (p * (torch.log(p + EPS) - torch.log(q + EPS))).sum(-1).mean(1)


def _sym(p: Tensor, q: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
    return ((p - q) * (log_p - log_q)).sum(-1).mean(1)  # KL(p||q) + KL(q||p), (B, L)


def symmetric_kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """``KL(p || q) + KL(q || p)`` per row (``log(. + 1e-4)``, mean over heads) in one pass: ``(B, L)``."""
    return _sym(p, q, torch.log(p + EPS), torch.log(q + EPS))


def entropy_rows(p: Tensor) -> Tensor:
    """Entropy per row with ``log(p + 1e-4)``, averaged over heads: ``(B, H, L, S)`` -> ``(B, L)``."""
    return (-p * torch.log(p + EPS)).sum(-1).mean(1)


def reconstruction_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """``MSE(x_hat, x) + mean(1 - cos(x_hat, x))`` over tokens (channels last)."""
    return F.mse_loss(x_hat, x) + (1 - F.cosine_similarity(x_hat, x, dim=-1)).mean()


def _branch_terms(corrs: list[Tensor | None], targets: list[Tensor | None]) -> tuple[Tensor, Tensor, Tensor]:
    """(attention-side symKL, target-side symKL, entropy), each averaged over layers and tokens."""
    pairs = [(p, q) for p, q in zip(corrs, targets) if p is not None and q is not None]
    if not pairs:
        raise ValueError("the correlation branch produced no maps")
    att_side, tgt_side, ent = [], [], []
    for p, q in pairs:
        log_p, log_q = torch.log(p + EPS), torch.log(q + EPS)
        pd, qd, log_pd, log_qd = p.detach(), q.detach(), log_p.detach(), log_q.detach()
        att_side.append(_sym(p, qd, log_p, log_qd).mean())  # gradient reaches the attention only
        tgt_side.append(_sym(pd, q, log_pd, log_q).mean())  # gradient reaches the RBF widths only
        ent.append((-p * log_p).sum(-1).mean())
    n = len(pairs)
    return sum(att_side) / n, sum(tgt_side) / n, sum(ent) / n  # type: ignore[return-value]


def fod_loss(tokens: Tensor, out: FODOutput, lambda1: float = 0.5, lambda2: float = 0.5) -> dict[str, Tensor]:
    """One level's loss terms; ``loss = loss1 + loss2`` of the official two-phase minimax.

    ``loss1 = rec + l1 * intra_tgt - l1 * inter_tgt`` (trains the RBF widths: targets follow the intra
    attention and move away from the inter attention); ``loss2 = rec - l1 * intra_att - l2 * H(intra) +
    l1 * inter_att + l2 * H(inter)`` (trains the attention: intra attention leaves the local prior, inter
    attention follows it). Branches that are off drop out, as in the official trainer.
    """
    rec = reconstruction_loss(tokens, out.x_out)
    loss1, loss2 = rec, rec
    terms: dict[str, Tensor] = {"rec": rec.detach()}
    if any(p is not None for p in out.intra_corrs):
        att, tgt, ent = _branch_terms(out.intra_corrs, out.intra_targets)
        loss1 = loss1 + lambda1 * tgt
        loss2 = loss2 - lambda1 * att - lambda2 * ent
        terms["intra_kl"] = att.detach()
    if any(p is not None for p in out.inter_corrs):
        att, tgt, ent = _branch_terms(out.inter_corrs, out.inter_targets)
        loss1 = loss1 - lambda1 * tgt
        loss2 = loss2 + lambda1 * att + lambda2 * ent
        terms["inter_kl"] = att.detach()
    terms["loss"] = loss1 + loss2
    return terms
