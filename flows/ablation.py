"""The paper's comparison as a flow: unimodal, fused CE, +ITC, +ITM, +ITC+ITM over seeds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import DEFAULT_PARAMS, StageParams
from mmaux.ablation import VARIANTS, format_table, run_ablation
from mmaux.config import Config
from mmaux.training import train

log = logging.getLogger(__name__)


def _tracked_train(cfg: Config, resume: bool = False):
    from mmaux.tracking import (
        MlflowCallback,
        MlflowService,
        first_line,
        log_config,
        log_result,
        run_tags,
    )

    service = MlflowService(cfg.tracking)
    service.start()
    name = Path(cfg.train.output_dir)
    with service.run(f"{name.parent.name}-{name.name}", tags={**run_tags(), "stage": "ablation"}):
        log_config(cfg)
        result = train(cfg, resume=resume, callbacks=[MlflowCallback(service)])
        try:
            log_result(result)
        except Exception as err:  # the comparison is local: keep training the other variants
            log.warning("MLflow: %s not fully logged (%s)", cfg.train.output_dir, first_line(err))
    return result


@flow(name="ablation", log_prints=True)
def ablation_flow(
    params: StageParams = DEFAULT_PARAMS,
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: tuple[str, ...] = VARIANTS,
    out: str = "results/ablation",
) -> dict:
    """Train every variant on every seed (finished runs are reused); one MLflow run each."""
    cfg = params.config("train.progress=false")
    fn = _tracked_train if cfg.tracking.enabled else train
    summary = run_ablation(cfg, seeds, Path(out), variants, train_fn=fn)
    create_markdown_artifact(key="ablation", markdown=format_table(summary))
    print(format_table(summary))
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="results/ablation")
    a = p.parse_args()
    ablation_flow(StageParams(params_file=a.params, overrides=a.overrides), a.seeds, out=a.out)
