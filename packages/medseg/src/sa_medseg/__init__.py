"""sa-medseg: ParaTransCNN and a Mamba U-Net (VM-UNet style) for medical image segmentation,
on MONAI and the shared attention core."""

__version__ = "0.1.0"
