"""The server discovers the restoration predictor through its entry point (no import side effects)."""

from importlib.metadata import entry_points


def test_predictor_entry_point_resolves_to_a_predictor():
    eps = {e.name: e for e in entry_points(group="shared_attention.predictors")}
    assert "restoration" in eps
    cls = eps["restoration"].load()
    assert cls.domain == "restoration"
    assert cls.io_spec.inputs[0].kind == "image"
    for method in ("load", "preprocess", "predict", "postprocess", "info"):
        assert callable(getattr(cls, method))
