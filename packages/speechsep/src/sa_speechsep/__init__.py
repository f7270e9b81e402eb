"""sa-speechsep: MossFormer monaural speech separation on the shared attention core: training, chunked inference, official checkpoints."""

__version__ = "0.1.0"
