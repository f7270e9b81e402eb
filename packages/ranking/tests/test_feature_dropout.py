"""ID dropout (model.feature_dropout): zeroes whole features per example while training, identity in eval."""

from __future__ import annotations

import pytest
import torch
from sa_ranking.models import FeatureDropout
from sa_ranking.sample import SCHEMA
from sa_ranking.schema import Schema


def test_zeroes_whole_features_at_the_rate_only_while_training():
    schema = Schema.from_dict(SCHEMA)
    names = [f.name for f in schema.sparse]
    s, w = len(names), 4
    fd = FeatureDropout(schema, {"user": 0.5}, w)
    emb = torch.randn(4000, s * w) + 3.0  # no zeros by chance
    torch.manual_seed(0)
    out = fd.train()(emb).reshape(4000, s, w)
    zero = (out == 0).all(-1)  # (B, S): whole feature rows dropped
    u = names.index("user")
    assert 0.45 < zero[:, u].float().mean().item() < 0.55
    others = [i for i in range(s) if i != u]
    assert not zero[:, others].any()
    kept = ~zero[:, u]
    # kept rows are untouched (no 1/(1-p) rescaling: zero is the unseen-id embedding)
    assert torch.equal(out[kept, u], emb.reshape(4000, s, w)[kept, u])
    assert torch.equal(fd.eval()(emb), emb)


def test_bad_settings_name_the_field():
    schema = Schema.from_dict(SCHEMA)
    with pytest.raises(ValueError, match="model.feature_dropout: unknown sparse feature"):
        FeatureDropout(schema, {"usr": 0.5}, 4)
    with pytest.raises(ValueError, match=r"rates must be in \[0, 1\)"):
        FeatureDropout(schema, {"user": 1.0}, 4)
