"""sa-restoration: HAT super-resolution on the shared attention core."""

__version__ = "0.1.0"
