"""Entry file of the scheduled retrain deployment, `vae-retrain/weekly-retrain`: its flow is
`pipelines/deploy.py:retrain` (defined in `vaeops.orchestration`, see pipelines/flows.py).

Serve it with the CLI: `vaeops schedule --help` registers the deployment with the Prefect API
(PREFECT_API_URL) and runs its flow runs until stopped. Each run retrains only if data.dvc
changed since the @champion was trained, and promotes only a challenger that beats the
champion by `promote.min_margin`.
"""

from vaeops.orchestration import retrain

__all__ = ["retrain"]
