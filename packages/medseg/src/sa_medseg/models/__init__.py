"""The two segmentation networks: ParaTransCNN and the Mamba U-Net (VM-UNet)."""
