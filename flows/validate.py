"""Stage 1: validate the data before anything trains: the data rulebook (``data.rules``, the
loader's own verdict) run as a Great Expectations checkpoint with Data Docs."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import (
    DEFAULT_PARAMS,
    REPORTS,
    StageParams,
    cli_params,
    init_stage_process,
    write_json,
)
from mmaux.validation import DataValidationError, ValidationReport, validate_data


def _io_error(task, task_run, state) -> bool:
    """Retry only what can pass on a second try (file system hiccups), not bad data."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_io_error)
def run_expectations(params: StageParams) -> ValidationReport:
    cfg = params.config()
    return validate_data(
        cfg.data.root,
        cfg.data.manifest,
        cfg.data.labels,
        cfg.data.rules,
        docs_dir=cfg.validation.docs_dir,
        check_images=cfg.data.check_images,
    )


@flow(name="validate", log_prints=True)
def validate_flow(params: StageParams = DEFAULT_PARAMS) -> dict:
    """Run the rulebook checkpoint; write reports/validation.json; fail on any error
    (warnings are reported, and do not fail)."""
    report = run_expectations(params)
    write_json(REPORTS / "validation.json", report.to_dict())
    create_markdown_artifact(
        key="data-validation",
        markdown=f"```\n{report.summary()}\n```\n\nData Docs: `{report.docs_index}`",
        description="Data rulebook (Great Expectations checkpoint) result for the manifest",
    )
    print(report.summary())
    if not report.success:
        raise DataValidationError(report)
    return report.to_dict()


if __name__ == "__main__":
    init_stage_process()
    validate_flow(cli_params(__doc__))
