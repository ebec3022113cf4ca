"""Import a public data set in its raw format into a canonical data directory.

python -m flows.import_data multioff --src ../shared/datasets/multioff --out data/multioff
"""

from __future__ import annotations

import argparse
from typing import Literal, get_args

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from mmaux.importers import IMPORTERS, ImportReport, run_import

Dataset = Literal["datakey", "mhp", "micd", "msd", "multioff", "mvsa", "tir"]


class ImportParams(BaseModel):
    """What to import and how (the flags of ``mmaux import``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Dataset
    src: str = Field(description="raw data folder (datakey: the CSV file)")
    out: str = Field(description="output data directory (must be new)")
    images: str | None = Field(None, description="image folder if not the default")
    on_missing: Literal["fail", "drop"] = "fail"
    link: Literal["copy", "hardlink"] = "copy"
    seed: int = Field(0, description="seed of the stratified split")
    text_file: str | None = Field(None, description="id,text CSV (MICD, ids-only TIR)")
    task: str | None = Field(None, description="label set where there are several (TIR)")
    fold: int | None = Field(None, description="numbered official split (MVSA)")


assert set(get_args(Dataset)) == set(IMPORTERS), "flow and library disagree on data sets"


@task
def import_task(p: ImportParams) -> ImportReport:
    """Read, check and write; an ImportFailed error is data, not a hiccup: no retries."""
    return run_import(**p.model_dump(exclude={"dataset"}), name=p.dataset)


@flow(name="import-dataset", log_prints=True)
def import_flow(params: ImportParams) -> dict:
    """Import ``params.dataset`` into ``params.out``; publish the import report."""
    report = import_task(params)
    create_table_artifact(
        key=f"import-{params.dataset}",
        table=[{"split": s, **counts} for s, counts in report.counts.items()],
        description=f"{report.dataset}: posts per split and label in {report.out}",
    )
    create_markdown_artifact(
        key=f"import-{params.dataset}-report",
        markdown=f"```\n{report.summary()}\n```\n\nSplit rule: {report.split_rule}",
    )
    print(report.summary())
    print(f"next: dvc add {params.out} && dvc repro (with data.root: {params.out} in params.yaml)")
    return {"out": report.out, "n_posts": report.n_posts, "counts": report.counts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(IMPORTERS))
    for flag in ("src", "out"):
        parser.add_argument(f"--{flag}", required=True)
    for flag in ("images", "text-file", "task"):
        parser.add_argument(f"--{flag}")
    parser.add_argument("--on-missing", choices=["fail", "drop"], default="fail")
    parser.add_argument("--link", choices=["copy", "hardlink"], default="copy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold", type=int)
    args = vars(parser.parse_args())
    import_flow(ImportParams(**{k.replace("-", "_"): v for k, v in args.items()}))
