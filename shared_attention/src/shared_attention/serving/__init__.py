"""The Predictor protocol shared by the domain CLIs and the server."""

from .control import CancelledError, cancel_scope, check_cancelled
from .precision import PRECISIONS, model_compiled, model_precision, set_model_compiled, set_model_precision
from .predictor import (
    FieldSpec,
    InputError,
    IOSpec,
    Predictor,
    PredictorBase,
    RunFolder,
    load_run_model,
    read_run_folder,
)

__all__ = [
    "CancelledError",
    "cancel_scope",
    "check_cancelled",
    "FieldSpec",
    "IOSpec",
    "InputError",
    "Predictor",
    "PredictorBase",
    "RunFolder",
    "load_run_model",
    "read_run_folder",
    "PRECISIONS",
    "model_compiled",
    "model_precision",
    "set_model_compiled",
    "set_model_precision",
]
