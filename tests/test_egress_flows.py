"""The analysis flows' egress parameters through a real Prefect server on the two-region cluster: ``dry_run``
plans and computes nothing, ``max_egress_gb`` refuses before the computation, the plan artifact shows predicted
beside measured."""

from __future__ import annotations

import pytest
from test_analysis_flows import (  # noqa: F401 - the fixtures: files, and results allowed under tmp_path
    FC,
    OBS_SAME,
    _artifacts,
    flow_data,
    outputs_under_tmp_path,
)

from flows.analysis import compare_forecast_to_observations
from proximate.analysis import ParameterError
from proximate.egress import EgressBudgetError, EgressPlan

pytestmark = pytest.mark.usefixtures("prefect_server", "flow_data", "outputs_under_tmp_path")


def _compare(cluster, out, **kwargs):
    return compare_forecast_to_observations(
        forecast=f"a:{FC}",
        observations=f"b:{OBS_SAME}",
        height_index=3,
        output=str(out),
        scheduler_address=cluster.address,
        **kwargs,
    )


def test_dry_run_plans_writes_the_plan_artifact_and_computes_nothing_then_the_run_matches_it(cluster, tmp_path):
    out = tmp_path / "diff.nc"
    planned = _compare(cluster, out, dry_run=True)

    assert isinstance(planned, EgressPlan)
    assert not out.exists()
    dry = _artifacts("compare-egress-plan")["compare-egress-plan"].data
    assert "predicted bytes" in dry and "measured bytes" not in dry, dry
    assert f"**{planned.cross_region_bytes:,}**" in dry

    res = _compare(cluster, out)  # the real run: measured beside the plan
    assert out.exists()
    assert abs(res.cross_region_bytes - planned.cross_region_bytes) <= 0.1 * res.cross_region_bytes + 64 * 1024
    ran = _artifacts("compare-egress-plan")["compare-egress-plan"].data
    assert "measured bytes" in ran and f"**{res.cross_region_bytes:,}**" in ran, ran
    locality = _artifacts("compare-locality")["compare-locality"].data
    assert "Predicted before the run, beside measured" in locality and "predicted bytes" in locality, locality


def test_max_egress_gb_below_the_plan_refuses_before_computing(cluster, tmp_path):
    out = tmp_path / "refused.nc"
    with pytest.raises(EgressBudgetError, match=r"egress budget exceeded, nothing submitted: predicted [\d,]+ bytes"):
        _compare(cluster, out, max_egress_gb=1e-9)  # 1 byte
    assert not out.exists()


def test_max_egress_gb_above_the_plan_runs_and_a_negative_one_is_refused(cluster, tmp_path):
    out = tmp_path / "allowed.nc"
    res = _compare(cluster, out, max_egress_gb=1.0)
    assert out.exists() and res.cross_region_bytes > 0
    with pytest.raises(ParameterError, match="max_egress_gb"):
        _compare(cluster, tmp_path / "never.nc", max_egress_gb=-1.0)
    assert not (tmp_path / "never.nc").exists()
