"""Serve every proximate flow from one long-running process, without a work pool.

    python -m deployments.serve

For machines where a work pool is overkill: every flow gets an on-demand deployment, and each saved Region
block with a ``nightly_cron`` a scheduled ``nightly-<region>`` (as ``proximate deploy-nightly`` makes for a work
pool); runs happen in this process, triggered from the UI or by their schedules.
"""

from __future__ import annotations

from prefect import serve


def deployments() -> list:
    from deployments.nightly import saved_regions
    from flows.analysis import compare_forecast_to_observations, scenario_difference, seasonal_mean, summarize
    from flows.catalog import index_region
    from flows.nightly import nightly_region
    from flows.sync import sync_region
    from flows.tabular import describe_table, fit_linear_regression

    flows = [compare_forecast_to_observations, scenario_difference, seasonal_mean, summarize, describe_table,
             fit_linear_regression, nightly_region, sync_region, index_region]  # fmt: skip
    out = [f.to_deployment(name=f.name) for f in flows]
    for region in saved_regions():
        if region.nightly_cron:
            out.append(
                nightly_region.to_deployment(
                    name=f"nightly-{region.name}",
                    cron=region.nightly_cron,
                    timezone=region.nightly_timezone,
                    parameters={"region": region.name},
                )
            )
    return out


if __name__ == "__main__":
    serve(*deployments())
