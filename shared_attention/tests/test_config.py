from dataclasses import dataclass, field
from typing import Literal

import pytest

from shared_attention.engine.config import ConfigError, dump_config, load_config, replace
from shared_attention.toy import ToyConfig


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    milestones: tuple[int, ...] = (10, 20)
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    steps: int = 5
    clip: float | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 7\ninner:\n  milestones: [1, 2, 3]\n")
    cfg = load_config(Outer, p, ["inner.lr=5e-4", "clip=1", "inner.mode=b"])
    assert cfg == Outer(name="x", steps=7, clip=1.0, inner=Inner(lr=5e-4, milestones=(1, 2, 3), mode="b"))
    assert isinstance(cfg.clip, float)
    with pytest.raises(AttributeError):
        cfg.steps = 3  # type: ignore[misc]


def test_nested_default_factory_kept_under_partial_override():
    base = ToyConfig()
    cfg = load_config(ToyConfig, None, ["train.run_dir=elsewhere/x"])
    assert cfg.train.run_dir == "elsewhere/x"
    assert cfg.train.max_steps == base.train.max_steps  # not reset to TrainConfig's own default
    assert cfg.train.optim == base.train.optim


def test_unknown_field_names_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*inner.*lrr"):
        load_config(Outer, p)


def test_wrong_type_and_literal():
    with pytest.raises(ConfigError, match="steps"):
        load_config(Outer, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="inner.mode"):
        load_config(Outer, None, ["inner.mode=c"])
    with pytest.raises(ConfigError, match="override"):
        load_config(Outer, None, ["steps"])


def test_values_are_never_evaluated():
    cfg = load_config(Outer, None, ["name=__import__('os').getcwd()"])
    assert cfg.name == "__import__('os').getcwd()"
    with pytest.raises(ConfigError):
        load_config(Outer, None, ["steps=!!python/object/apply:os.getcwd []"])


def test_dump_round_trip_and_replace(tmp_path):
    cfg = replace(Outer(), **{"inner.lr": 0.5, "steps": 9})
    assert cfg.inner.lr == 0.5 and cfg.steps == 9
    p = tmp_path / "r.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(Outer, p) == cfg


def test_invalid_yaml_names_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(Outer, p)
