"""sa-serve: one FastAPI app for every installed shared-attention domain package."""

__version__ = "0.1.0"
