"""Serve every proximate flow from one long-running process, without a work pool.

    python -m deployments.serve

For machines where a work pool is overkill: the flows get deployments (with the nightly schedules of
prefect.yaml's regions taken from the environment) and run in this process when triggered from the UI.
"""

from __future__ import annotations

import os

from prefect import serve


def deployments() -> list:
    from flows.analysis import compare_forecast_to_observations
    from flows.catalog import index_region
    from flows.sync import sync_region

    out = [compare_forecast_to_observations.to_deployment(name="compare-forecast-to-observations")]
    timezone = os.environ.get("PROXIMATE_TIMEZONE", "UTC")
    for region in filter(None, os.environ.get("PROXIMATE_REGIONS", "").split(",")):
        out.append(
            sync_region.to_deployment(
                name=f"sync-{region}", cron="0 1 * * *", timezone=timezone, parameters={"region": region}
            )
        )
        out.append(index_region.to_deployment(name=f"index-{region}", parameters={"region": region}))
    return out


if __name__ == "__main__":
    serve(*deployments())
