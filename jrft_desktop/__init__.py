"""JRFT Desktop: finetune pretrained transformers with a few thousand parameters (arXiv 2305.19264)."""

__version__ = "0.1.0"
