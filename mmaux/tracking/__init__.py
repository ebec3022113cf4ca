"""MLflow experiment tracking and the model registry for mmaux runs, one module per job:

* :mod:`~mmaux.tracking.service`: :class:`MlflowService` (tracking URI, bounded requests,
  experiment, runs owned by their process; runs of dead processes closed as KILLED),
  :func:`run_tags`;
* :mod:`~mmaux.tracking.callback`: :class:`MlflowCallback`, training curves that never stop
  or stall training;
* :mod:`~mmaux.tracking.results`: :func:`log_config`, :func:`log_result` (final metrics, run
  files, reports; figures in :mod:`~mmaux.tracking.figures`);
* :mod:`~mmaux.tracking.pyfunc`: :class:`~mmaux.tracking.pyfunc.MmauxModel`, the MLflow model
  (a wrapper of :class:`mmaux.prediction.Predictor`), logged by :func:`log_model`
  (:mod:`~mmaux.tracking.export`);
* :mod:`~mmaux.tracking.registry`: :func:`promote_if_better`, the champion alias.

Importing this package does not import mlflow (about a second); only
:mod:`mmaux.tracking.pyfunc` does, at import.
"""

from mmaux.tracking.callback import MlflowCallback
from mmaux.tracking.export import log_model
from mmaux.tracking.registry import promote_if_better
from mmaux.tracking.results import log_config, log_result
from mmaux.tracking.service import (
    MlflowService,
    TrackingError,
    first_line,
    resolve_tracking_uri,
    run_tags,
)

__all__ = [
    "MlflowCallback",
    "MlflowService",
    "TrackingError",
    "first_line",
    "log_config",
    "log_model",
    "log_result",
    "promote_if_better",
    "resolve_tracking_uri",
    "run_tags",
]
