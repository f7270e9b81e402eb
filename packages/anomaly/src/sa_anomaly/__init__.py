"""sa-anomaly: FOD (Focus the Discrepancy) image anomaly detection on the shared attention core:
intra/inter-correlation attention, training, official checkpoints."""

__version__ = "0.1.0"
