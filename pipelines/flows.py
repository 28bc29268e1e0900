"""Entry file of the study's Prefect flows; the flows themselves live in `vaeops.orchestration`.

They are defined in the installed package so that the CLI, Prefect's runner and Dask workers
import them by module name from any directory; this file re-exports them for Prefect
(`prefect deploy pipelines/flows.py:retrain`) and runs one of them once:

    python pipelines/flows.py study   [--params params.yaml] [--workers N] [--dask-address ADDR]
    python pipelines/flows.py retrain [--force] [same options]

The same as `vaeops flow study|retrain`. ADDR is a Dask scheduler (tcp://127.0.0.1:8786) or
`local` for a LocalCluster started for the run; without it variants train in local processes.
"""

from __future__ import annotations

import argparse
import json

from vaeops.orchestration import LOCAL_CLUSTER, retrain, study

__all__ = ["retrain", "study"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one vaeops Prefect flow once.")
    parser.add_argument("flow", choices=["study", "retrain"])
    parser.add_argument("--params", default="params.yaml", help="params file [params.yaml]")
    parser.add_argument("--workers", type=int, default=None, help="parallel variants [cores]")
    parser.add_argument(
        "--dask-address", default=None, help=f"Dask scheduler address, or '{LOCAL_CLUSTER}'"
    )
    parser.add_argument("--force", action="store_true", help="retrain: even if data unchanged")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.force and args.flow != "retrain":
        parser.error("--force applies to the retrain flow only")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    options = {
        "params_path": args.params,
        "workers": args.workers,
        "dask_address": args.dask_address,
    }
    result = retrain(**options, force=args.force) if args.flow == "retrain" else study(**options)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return result


# The guard is required: the local fan-out spawns worker processes, which re-import this file.
if __name__ == "__main__":
    main()
