"""Model families behind one interface (:class:`MultimodalModel`) and :func:`build_model`."""

from mmaux.models.base import ModelOutput, MultimodalModel
from mmaux.models.build import FAMILIES, build_model
from mmaux.models.late import Encoded, LateFusionModel

__all__ = [
    "FAMILIES",
    "Encoded",
    "LateFusionModel",
    "ModelOutput",
    "MultimodalModel",
    "build_model",
]
