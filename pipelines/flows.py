"""Entry file of the study's Prefect flows, for a deployment's entrypoint:
`pipelines/flows.py:study` or `pipelines/flows.py:retrain` (`prefect deploy ...`).

The flows live in `vaeops.orchestration`, inside the installed package, so that the CLI, Prefect's
runner and Dask workers import them by module name from any directory. Run them once with the
CLI: `vaeops flow study|retrain --help`.
"""

from vaeops.orchestration import retrain, study

__all__ = ["retrain", "study"]
