"""Encoders, fusion heads and the multimodal classifier."""

from mmaux.models.classifier import Encoded, ModelOutput, MultimodalClassifier, build_model

__all__ = ["Encoded", "ModelOutput", "MultimodalClassifier", "build_model"]
