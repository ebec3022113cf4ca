"""Build the configured model family (``model.family``) with the encoders it needs."""

from __future__ import annotations

from mmaux.config import Config
from mmaux.models.base import MultimodalModel
from mmaux.models.encoders import ImageEncoder, TextEncoder, load_image_encoder, load_text_encoder

FAMILIES = ("late", "mmbt", "vilt", "lxmert")


def build_model(
    cfg: Config, num_classes: int
) -> tuple[MultimodalModel, TextEncoder | None, ImageEncoder | None]:
    """The model, the text side (its tokenizer feeds the batches) and the image side (its
    ``data_config`` sets the image transform; its backbone's features may be cached)."""
    family = cfg.model.family
    if family == "late":
        from mmaux.models.late import LateFusionModel

        fusion = cfg.model.fusion
        text = load_text_encoder(cfg.model.text) if fusion != "image" else None
        image = load_image_encoder(cfg.model.image) if fusion != "text" else None
        return LateFusionModel(cfg, num_classes, text, image), text, image
    if family == "mmbt":
        from mmaux.models.mmbt import MMBTModel

        text, image = load_text_encoder(cfg.model.text), load_image_encoder(cfg.model.image)
        return MMBTModel(cfg, num_classes, text, image), text, image
    if family == "vilt":
        from mmaux.models.vilt import build_vilt

        return build_vilt(cfg, num_classes)
    if family == "lxmert":
        from mmaux.models.lxmert import build_lxmert

        return build_lxmert(cfg, num_classes)
    raise ValueError(f"unknown model.family {family!r}; expected one of {', '.join(FAMILIES)}")
