"""The demo moved to :mod:`deployments.demo`, beside ``proximate up``'s stages that share its setup.

This name stays for installations whose entry-point metadata still says ``demo = "flows.demo:run_demo"`` (an
editable install made before the move); reinstalling reads ``deployments.demo:run_demo`` from pyproject.toml.
"""

from deployments.demo import (  # noqa: F401 - re-exported for the old entry point
    DEMO_CATALOG,
    FORECAST_REGION,
    OBSERVATIONS_REGION,
    TRIPS,
    demo_environment,
    environment,
    run_demo,
)
