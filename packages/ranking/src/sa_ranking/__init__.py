"""sa-ranking: Hiformer ranking on torchrec and the shared attention core (heterogeneous feature interactions,
pruned serving)."""

__version__ = "0.1.0"
