"""The server discovers the speechsep predictor through its entry point (no import side effects)."""

from importlib.metadata import entry_points


def test_predictor_entry_point_resolves_to_a_predictor():
    eps = {e.name: e for e in entry_points(group="shared_attention.predictors")}
    assert "speechsep" in eps
    cls = eps["speechsep"].load()
    assert cls.domain == "speechsep"
    assert cls.io_spec.inputs[0].kind == "audio"
    # any sample rate and channel count are accepted (resampled / down-mixed), so no such constraint is published
    assert "sample_rate" not in cls.io_spec.inputs[0].constraints
    for method in ("load", "from_official", "preprocess", "predict", "postprocess", "info"):
        assert callable(getattr(cls, method))
