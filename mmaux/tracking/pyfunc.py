"""The MLflow pyfunc model of a finished run: raw posts (a ``text`` column and an ``image``
file path column) in; ``label`` and one ``p_<label>`` probability per class out.

It is a thin wrapper of :class:`mmaux.prediction.Predictor`, the code ``mmaux evaluate``
runs. MLflow loads it from code (:data:`ENTRY_POINT`, see :func:`mmaux.tracking.export
.log_model`), never from a pickle. This module imports mlflow; the rest of
:mod:`mmaux.tracking` does so only when called.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from mmaux.prediction import Predictor

# The models-from-code entry point log_model stores with the model.
ENTRY_POINT = """\
import mlflow

from mmaux.tracking.pyfunc import MmauxModel

mlflow.models.set_model(MmauxModel())
"""


class MmauxModel(mlflow.pyfunc.PythonModel):
    """A finished mmaux run as an MLflow model (CPU)."""

    predictor: Predictor

    def load_context(self, context: Any) -> None:
        """Rebuild the classifier from the ``config``, ``labels`` and ``weights`` artifacts."""
        arts = context.artifacts
        self.predictor = Predictor.from_files(
            arts["config"], arts["labels"], arts["weights"], device="cpu"
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per post: ``label`` and the class probabilities (the signature, not the
        ``pd.DataFrame`` hint, validates the input)."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predictor.predict_frame(frame)
