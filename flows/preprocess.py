"""Stage 2: build the caches the trainer reads (frozen image features or uint8 pixels)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.common import (
    DEFAULT_PARAMS,
    REPORTS,
    StageParams,
    cli_params,
    init_stage_process,
    write_json,
)
from mmaux.preprocess import preprocess


@task(retries=2, retry_delay_seconds=2)
def build_caches(params: StageParams) -> dict:
    return preprocess(params.config("train.progress=false"))


@flow(name="preprocess", log_prints=True)
def preprocess_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Fill ``data.cache_dir``; write reports/preprocess.json."""
    summary = build_caches(params)
    write_json(REPORTS / "preprocess.json", summary)
    create_table_artifact(
        key="preprocess-summary",
        table=[{"split": s, "posts": n} for s, n in summary["posts"].items()]
        + [{"split": "images", "posts": summary["images"]}],
        description=f"caches in {summary['cache_dir']}: {', '.join(summary['cache_files'])}",
    )
    print(summary)
    return summary


if __name__ == "__main__":
    init_stage_process()
    preprocess_flow(cli_params(__doc__))
