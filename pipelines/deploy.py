"""Serve the scheduled retrain deployment: `python pipelines/deploy.py [--cron "0 3 * * 1"]`.

Registers the deployment `vae-retrain/weekly-retrain` with the Prefect API (PREFECT_API_URL)
and runs its flow runs in this process until stopped; the same as `vaeops schedule`. Each run
retrains only if data.dvc changed since the @champion was trained, and promotes only a
challenger that beats the champion by `promote.min_margin`. The flow is defined in
`vaeops.orchestration` (see pipelines/flows.py for why).
"""

from __future__ import annotations

import argparse

from vaeops.orchestration import DEFAULT_CRON, DEPLOYMENT_NAME, LOCAL_CLUSTER, serve_retrain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the scheduled vaeops retrain deployment.")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (UTC) ['{DEFAULT_CRON}']")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment [{DEPLOYMENT_NAME}]")
    parser.add_argument("--params", default="params.yaml", help="params file [params.yaml]")
    parser.add_argument("--workers", type=int, default=None, help="parallel variants [cores]")
    parser.add_argument(
        "--dask-address", default=None, help=f"Dask scheduler address, or '{LOCAL_CLUSTER}'"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    serve_retrain(
        cron=args.cron,
        params_path=args.params,
        workers=args.workers,
        dask_address=args.dask_address,
        name=args.name,
    )


if __name__ == "__main__":  # worker processes are spawned and re-import this file
    main()
