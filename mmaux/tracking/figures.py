"""Report figures for MLflow: the confusion matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def confusion_figure(cm: list[list[int]], labels: list[str], title: str) -> Figure:
    """A confusion-matrix figure drawn with the Agg canvas (no GUI, no pyplot state): cells
    shaded by the fraction of the true class, annotated with counts."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mat = np.asarray(cm, dtype=float)
    size = max(4.0, 0.6 * len(labels) + 2.5)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = mat.sum(1, keepdims=True)
    shade = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    im = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in ticks:
        for j in ticks:
            color = "white" if shade[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(mat[i, j])), ha="center", va="center", color=color)
    fig.tight_layout()
    return fig
