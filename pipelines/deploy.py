"""Entry file of the scheduled retrain, `vae-retrain/weekly-retrain`: its flow is
`pipelines/deploy.py:retrain` (defined in `vaeops.orchestration`, see pipelines/flows.py).

`vaeops schedule` deploys it to the `process` work pool `vaeops` (the deployment imports the flow
by module name, `vaeops.orchestration.retrain`, and runs in the project root); a worker runs its
flow runs: `prefect worker start --pool vaeops`. Each run retrains only if data.dvc changed since
the @champion was trained, and promotes only a challenger that beats the champion by
`promote.min_margin`.
"""

from vaeops.orchestration import retrain

__all__ = ["retrain"]
