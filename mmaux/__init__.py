"""mmaux: multimodal post classification with image-text auxiliary tasks."""

__version__ = "0.1.0"
