"""The server discovers the ranking predictor through its entry point; the CLI help is instant."""

import subprocess
import sys
from importlib.metadata import entry_points


def test_predictor_entry_point_resolves_to_a_predictor():
    eps = {e.name: e for e in entry_points(group="shared_attention.predictors")}
    assert "ranking" in eps
    cls = eps["ranking"].load()
    assert cls.domain == "ranking"
    assert cls.io_spec.inputs[0].kind == "json" and cls.io_spec.outputs[0].name == "scores"
    for method in ("load", "preprocess", "predict", "postprocess", "info"):
        assert callable(getattr(cls, method))


def test_cli_help_does_not_import_torch():
    code = "import sys; from sa_ranking import cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
