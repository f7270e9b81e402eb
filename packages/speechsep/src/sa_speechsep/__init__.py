"""sa-speechsep: MossFormer monaural speech separation on the shared attention core.

Training, chunked inference of long files, official checkpoints.
"""

__version__ = "0.1.0"
