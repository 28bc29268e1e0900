"""The report step: the study's answer on one page, logged to the study's MLflow run.

Runs after promotion. Prefect artifacts are published by the flow, from its own process, with
`vaeops.report.publish_prefect_artifacts` (this step runs as a subprocess of `dvc repro`).
"""

from __future__ import annotations

from vaeops.config import Params
from vaeops.report import publish_to_mlflow, write_report

ENTRY_POINT = "vaeops report"


def run(params: Params) -> dict:
    """Write reports/study.html and study.md, the plot data and metrics/claims.json, and log
    the report to the study's MLflow run."""
    written = write_report(params)
    return written | {"mlflow_run": publish_to_mlflow(params, ENTRY_POINT)}
