"""The server discovers the anomaly predictor through its entry point (no import side effects)."""

from importlib.metadata import entry_points


def test_predictor_entry_point_resolves_to_a_predictor() -> None:
    eps = {e.name: e for e in entry_points(group="shared_attention.predictors")}
    assert "anomaly" in eps
    cls = eps["anomaly"].load()
    assert cls.domain == "anomaly"
    assert cls.io_spec.inputs[0].kind == "image"
    names = [f.name for f in cls.io_spec.outputs]
    assert names == ["score", "heatmap_png", "threshold", "heatmap_min", "heatmap_max"]
    for method in ("load", "from_official", "preprocess", "predict", "postprocess", "info", "cost"):
        assert callable(getattr(cls, method))
