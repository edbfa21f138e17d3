"""sidn: SIDN (Yang et al., IEEE TII 2023) texture-defect segmentation as a library."""

__version__ = "0.1.0"
