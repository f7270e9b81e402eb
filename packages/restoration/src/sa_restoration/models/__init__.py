"""Restoration models (wiring of shared_attention mechanisms)."""
