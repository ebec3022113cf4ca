"""The model registry: register a logged model, move the champion alias only on a gain."""

from __future__ import annotations

import logging
import math

from mmaux.tracking.service import MlflowService

log = logging.getLogger(__name__)


def promote_if_better(
    service: MlflowService,
    model_uri: str,
    name: str,
    score: float,
    alias: str = "champion",
    metric: str = "val_macro_f1",
) -> tuple[int, bool]:
    """Register ``model_uri`` as a new version of ``name`` with ``score`` stored as the
    version tag ``metric``; point ``alias`` at it when there is no current holder or
    ``score`` beats the holder's stored score. Returns (version, promoted)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    service.start()  # the registry URI follows the service's tracking URI
    client = service.client()
    version = mlflow.register_model(model_uri, name)
    client.set_model_version_tag(name, version.version, metric, repr(float(score)))
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        champion = None
    best = -math.inf
    if champion is not None:
        try:
            best = float(champion.tags.get(metric, "-inf"))
        except ValueError:
            log.warning("%s v%s: unreadable %s tag", name, champion.version, metric)
    promoted = champion is None or float(score) > best
    if promoted:
        client.set_registered_model_alias(name, alias, version.version)
    log.info(
        "%s v%s (%s=%.4f): %s",
        name,
        version.version,
        metric,
        score,
        f"now {alias}" if promoted else f"kept {alias} v{champion.version} ({best:.4f})",
    )
    return int(version.version), promoted
