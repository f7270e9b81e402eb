"""Deprecated: the FOD model moved to :mod:`sa_anomaly.models.fod` (this alias stays one release)."""

from .models.fod import *  # noqa: F403
from .models.fod import FODAnomalyModel, FODHead, FODOutput, anomaly_maps_from_outputs, fod_position_embedding

__all__ = ["FODAnomalyModel", "FODHead", "FODOutput", "anomaly_maps_from_outputs", "fod_position_embedding"]
