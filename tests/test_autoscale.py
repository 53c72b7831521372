"""Per-region autoscaling without a cluster: the policy (pure), the command line's bounds, the ECS backend
against moto's ECS server, and the loop with a scheduler that only reports backlogs."""

from __future__ import annotations

import time

import boto3
import pytest

from proximate import cli
from proximate.autoscale import (
    AdaptivePolicy,
    Autoscaler,
    ECSBackend,
    ECSService,
    RegionBacklog,
    RegionBounds,
    WorkerLoad,
    desired_workers,
    parse_bounds,
    workers_to_retire,
)
from proximate.regions import RegionError


def _workers(region: str, n: int, **kw) -> tuple[WorkerLoad, ...]:
    return tuple(WorkerLoad(f"tcp://{region}:{i}", f"{region}-{i}", **kw) for i in range(n))


# -- bounds -----------------------------------------------------------------------------------------------------


def test_bounds_take_a_default_and_per_region_overrides():
    bounds = parse_bounds(["a", "b"], ["1"], ["3", "a=8"])
    assert bounds == {"a": RegionBounds(1, 8), "b": RegionBounds(1, 3)}
    assert parse_bounds(["a", "b"], ["b=0"], ["2"]) == {"a": RegionBounds(1, 2), "b": RegionBounds(0, 2)}


@pytest.mark.parametrize(
    ("mins", "maxs", "message"),
    [
        (["4"], ["3"], "region 'a': --min-workers 4 is more than --max-workers 3"),
        (["-1"], ["3"], "--min-workers must not be negative, got '-1'"),
        ([], ["b=-2", "3"], "--max-workers b= must not be negative, got '-2'"),
        ([], ["c=4", "3"], "--max-workers 'c=4' names unknown region 'c'; this cluster has a, b"),
        (["x=1"], ["3"], "--min-workers 'x=1' names unknown region 'x'"),
        ([], ["three"], "--max-workers takes a whole number of workers, got 'three'"),
        ([], ["a=2"], "region 'b' has no maximum"),
        ([], ["0"], "--max-workers for region 'a' must be at least 1, got 0"),
        (["a=5"], ["3", "a=4"], "region 'a': --min-workers 5 is more than --max-workers 4"),
    ],
)
def test_bad_bounds_are_refused_naming_the_value(mins, maxs, message):
    with pytest.raises(RegionError) as err:
        parse_bounds(["a", "b"], mins, maxs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-workers", "4", "--max-workers", "3"], "--min-workers 4 is more than --max-workers 3"),
        (["--max-workers", "-3"], "must not be negative, got '-3'"),
        (["--max-workers", "3", "--max-workers", "zz=4"], "names unknown region 'zz'"),
        (["--min-workers", "1"], "--min-workers needs --max-workers"),
        (["--max-workers", "3", "--workers-per-region", "5"], "--workers-per-region 5 is outside region 'a'"),
        (["--max-workers", "3", "--scale-down-after", "-1"], "--scale-down-after must not be negative"),
    ],
)
def test_cluster_up_refuses_bad_scaling_before_anything_starts(tmp_path, monkeypatch, capsys, extra, message):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    started = []
    monkeypatch.setattr("proximate.cluster.LocalRegionalCluster.start", lambda self: started.append(self))
    argv = ["cluster", "up", "--region", f"a={tmp_path / 'a'}", "--region", f"b={tmp_path / 'b'}", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert started == []


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--target-duration", "0", "must be positive, got 0.0"),
        ("--scale-interval", "-1", "must be positive, got -1.0"),
        ("--scale-down-after", "-2", "must not be negative, got -2.0"),
    ],
)
def test_cluster_up_and_autoscale_refuse_a_bad_timing_alike(tmp_path, monkeypatch, capsys, flag, value, rule):
    """The two commands share their scaling options and one check: the same value, the same one-line refusal."""
    (tmp_path / "a").mkdir()
    started = []
    monkeypatch.setattr("proximate.cluster.LocalRegionalCluster.start", lambda self: started.append(self))
    up = ["cluster", "up", "--region", f"a={tmp_path / 'a'}", "--max-workers", "2", flag, value]
    ecs = ["autoscale", "--scheduler", "tcp://127.0.0.1:1", "--ecs-service", "a=eu-west-2:c/s", "--max-workers", "2"]
    for argv in (up, [*ecs, flag, value]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == f"proximate: error: {flag} {rule}\n"
    assert started == []


# -- the policy ---------------------------------------------------------------------------------------------------


def test_desired_workers_follows_the_backlog_within_bounds():
    b = RegionBounds(1, 3)
    assert desired_workers(RegionBacklog("a", tasks=40, seconds=40.0), b) == 3  # 8 wanted, 3 allowed
    assert desired_workers(RegionBacklog("a", tasks=2, seconds=40.0), b) == 2  # two long tasks: two workers
    assert desired_workers(RegionBacklog("a", tasks=3, seconds=6.0), b) == 2  # 6 s of work, 5 s target
    assert desired_workers(RegionBacklog("a"), b) == 1  # idle: the minimum
    assert desired_workers(RegionBacklog("a", tasks=1, seconds=0.01), RegionBounds(0, 3)) == 1  # never 0 with work
    assert desired_workers(RegionBacklog("a"), RegionBounds(0, 3)) == 0
    # threads: 40 tasks of 1 s on 4-thread workers want 2 workers for a 5 s target
    assert desired_workers(RegionBacklog("a", tasks=40, seconds=40.0), RegionBounds(1, 9), threads_per_worker=4) == 2


def test_workers_to_retire_takes_idle_ones_with_least_data_and_keeps_the_minimum():
    workers = (
        WorkerLoad("tcp://a:0", "a-0", nbytes=500, unique_keys=2),
        WorkerLoad("tcp://a:1", "a-1", nbytes=100, unique_keys=1),
        WorkerLoad("tcp://a:2", "a-2", processing=3),
        WorkerLoad("tcp://a:3", "a-3", nbytes=0),
    )
    assert [w.name for w in workers_to_retire(workers, 2, minimum=1)] == ["a-3", "a-1"]
    assert [w.name for w in workers_to_retire(workers, 9, minimum=1)] == ["a-3", "a-1", "a-0"]  # a-2 is busy
    assert [w.name for w in workers_to_retire(workers, 9, minimum=3)] == ["a-3"]
    # minimum 0: the last worker holding the only copy of data stays; without data it may go
    assert workers_to_retire(workers[:1], 1, minimum=0) == []
    assert [w.name for w in workers_to_retire(workers[3:], 1, minimum=0)] == ["a-3"]
    closing = (WorkerLoad("tcp://a:0", "a-0", status="closing_gracefully"), WorkerLoad("tcp://a:1", "a-1"))
    assert workers_to_retire(closing, 1, minimum=1) == []  # one is already leaving


def test_policy_scales_up_at_once_and_down_only_after_the_cool_down():
    policy = AdaptivePolicy({"a": RegionBounds(1, 3), "b": RegionBounds(1, 3)}, scale_down_after=10.0)
    busy = {"a": RegionBacklog("a", tasks=40, seconds=40.0, workers=_workers("a", 1)), "b": RegionBacklog("b")}
    (a, b) = policy.decide(0.0, busy, {"a": 1, "b": 1})
    assert (a.target, a.start, b.target, b.start, b.retire) == (3, 2, 1, 0, ())
    # workers still starting count: the same backlog a second later starts nothing more
    (a, _) = policy.decide(1.0, busy, {"a": 3, "b": 1})
    assert a.start == 0
    idle = {"a": RegionBacklog("a", workers=_workers("a", 3)), "b": RegionBacklog("b", workers=_workers("b", 1))}
    for t in (20.0, 25.0, 29.9):  # below target since 20 s: nothing retired before 30 s
        (a, b) = policy.decide(t, idle, {"a": 3, "b": 1})
        assert a.target == 1 and a.retire == () and b.retire == ()
    (a, b) = policy.decide(30.0, idle, {"a": 3, "b": 1})
    assert len(a.retire) == 2 and b.retire == ()
    # a lull shorter than the cool-down costs nothing: the clock restarts when the backlog returns
    policy.decide(31.0, busy, {"a": 3, "b": 1})
    (a, _) = policy.decide(35.0, idle, {"a": 3, "b": 1})
    assert a.retire == ()


def test_policy_restores_a_region_below_its_minimum_and_never_acts_on_unbounded_regions():
    policy = AdaptivePolicy({"a": RegionBounds(2, 4)})
    (a,) = policy.decide(0.0, {"z": RegionBacklog("z", tasks=99, seconds=99.0)}, {"a": 0})
    assert (a.region, a.start) == ("a", 2)


def test_policy_refuses_nonsense_settings():
    with pytest.raises(ValueError, match="target_duration must be positive"):
        AdaptivePolicy({}, target_duration=0)
    with pytest.raises(ValueError, match="scale_down_after must not be negative"):
        AdaptivePolicy({}, scale_down_after=-1)


# -- ECS against moto's server ------------------------------------------------------------------------------------

#: Two proximate regions in two AWS regions, as in production (one ECS service per region).
ECS_REGIONS = {"a": "eu-west-2", "b": "us-east-1"}


@pytest.fixture
def ecs(s3, s3_server):
    """ECS services in moto's server (the session's, which serves every AWS API; ``s3`` has just reset it)."""
    moto_server = s3_server
    clients = {}
    for region, aws_region in ECS_REGIONS.items():
        c = boto3.client("ecs", region_name=aws_region, endpoint_url=moto_server)
        c.create_cluster(clusterName=f"proximate-{region}")
        c.register_task_definition(
            family="dask-worker", containerDefinitions=[{"name": "worker", "image": "proximate", "memory": 512}]
        )
        c.create_service(
            cluster=f"proximate-{region}", serviceName="workers", taskDefinition="dask-worker", desiredCount=1
        )
        clients[aws_region] = c
    yield clients


def _services():
    return {r: ECSService(f"proximate-{r}", "workers", aws) for r, aws in ECS_REGIONS.items()}


def _desired(clients, region: str) -> int:
    c = clients[ECS_REGIONS[region]]
    return c.describe_services(cluster=f"proximate-{region}", services=["workers"])["services"][0]["desiredCount"]


class ReportedBacklog:
    """A scheduler that reports a backlog and retires whatever it is asked to."""

    def __init__(self) -> None:
        self.regions: dict = {}

    def backlog(self):
        return {"regions": self.regions}

    def retire(self, addresses):
        return {"retired": list(addresses), "kept": {}}


def test_ecs_targets_become_update_service_calls_on_each_regions_service(ecs):
    made = []

    def factory(aws_region):
        made.append(aws_region)
        return ecs[aws_region]

    bounds = {"a": RegionBounds(1, 3), "b": RegionBounds(1, 3)}
    backend = ECSBackend(_services(), client_factory=factory, bounds=bounds)
    assert sorted(made) == sorted(ECS_REGIONS.values())  # one client per AWS region
    assert backend.requested("a") == backend.requested("b") == 1  # read from the services
    sched = ReportedBacklog()
    scaler = Autoscaler(sched, backend, AdaptivePolicy(bounds, scale_down_after=0.0), clock=iter(range(100)).__next__)
    sched.regions = {
        "a": {"tasks": 40, "seconds": 40.0, "workers": [w.__dict__ for w in _workers("a", 1)]},
        "b": {"tasks": 0, "seconds": 0.0, "workers": [w.__dict__ for w in _workers("b", 1)]},
    }
    scaler.step()
    assert (_desired(ecs, "a"), _desired(ecs, "b")) == (3, 1)
    assert backend.updates == [("a", 3)]  # b was never touched
    sched.regions["a"] = {"tasks": 0, "seconds": 0.0, "workers": [w.__dict__ for w in _workers("a", 3)]}
    scaler.step()  # below target since now
    scaler.step()
    assert (_desired(ecs, "a"), _desired(ecs, "b")) == (1, 1)
    assert backend.updates == [("a", 3), ("a", 1)]
    # the backend's own fence: a stale or hand-made request never leaves the bounds
    backend.scale_up("b", 50)
    assert _desired(ecs, "b") == 3
    backend.retired("b", ["x"] * 10)
    assert _desired(ecs, "b") == 1
    assert backend.errors == []


def test_a_failing_update_service_is_retried_then_reported_and_never_raises(ecs):
    failures = {"n": 1}

    def flaky(**kwargs):
        if failures["n"] > 0:
            failures["n"] -= 1
            raise ConnectionError("ECS endpoint unreachable (injected)")

    client = ecs["eu-west-2"]
    client.meta.events.register("before-call.ecs.UpdateService", flaky)
    try:
        backend = ECSBackend(_services(), client_factory=ecs.__getitem__, backoff=0.01)
        backend.scale_up("a", 1)  # first attempt fails, the second succeeds
        assert _desired(ecs, "a") == 2 and backend.errors == []
        failures["n"] = 99  # every attempt fails
        sched = ReportedBacklog()
        sched.regions = {"a": {"tasks": 40, "seconds": 40.0, "workers": []}, "b": {"tasks": 0, "workers": []}}
        policy = AdaptivePolicy({"a": RegionBounds(1, 3), "b": RegionBounds(1, 3)})
        scaler = Autoscaler(sched, backend, policy)
        scaler.step()  # does not raise
        assert _desired(ecs, "a") == 2 and backend.requested("a") == 2  # unchanged, and known to be
        ((_, region, message),) = backend.errors
        assert region == "a"
        assert "update_service desiredCount=3 failed after 3 attempts" in message and "injected" in message
        failures["n"] = 0
        scaler.step()  # the next step tries again
        assert _desired(ecs, "a") == 3
    finally:
        client.meta.events.unregister("before-call.ecs.UpdateService", flaky)


def test_a_service_that_does_not_exist_is_reported_not_raised(ecs):
    services = {"a": ECSService("proximate-a", "no-such-service", "eu-west-2")}
    backend = ECSBackend(services, client_factory=ecs.__getitem__, backoff=0.0, attempts=2)
    assert backend.requested("a") == 0  # describe_services found nothing
    backend.scale_up("a", 2)
    (_, region, message) = backend.errors[-1]
    assert region == "a" and "update_service desiredCount=2 failed after 2 attempts" in message
    assert "ServiceNotFoundException" in message


def test_the_loop_survives_a_scheduler_that_cannot_be_reached():
    class Down:
        def backlog(self):
            raise OSError("scheduler unreachable")

    class Nothing(ECSBackend):
        def __init__(self):  # no AWS at all
            self.errors, self.desired, self.regions = [], {"a": 1}, ["a"]

    scaler = Autoscaler(Down(), Nothing(), AdaptivePolicy({"a": RegionBounds(1, 2)}))
    assert scaler.step() == []
    assert scaler.errors == ["reading the backlog failed: OSError: scheduler unreachable"]


# -- the RegionalCluster block ------------------------------------------------------------------------------------


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_regional_cluster_block_carries_the_same_bounds():
    from blocks import RegionalCluster

    block = RegionalCluster(regions=["ra", "rb"], max_workers=3, max_workers_per_region={"a": 8})
    assert block.bounds(["a", "b"]) == {"a": RegionBounds(1, 8), "b": RegionBounds(1, 3)}
    assert RegionalCluster(regions=["ra"]).bounds(["a"]) is None  # fixed workers_per_region, as before
    with pytest.raises(RegionError, match="names unknown region 'a'"):
        block.bounds(["b"])  # a region the cluster does not have: refused when the flow starts, before the cluster


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_workers": 2, "min_workers": 3}, "min_workers 3 is more than max_workers 2"),
        ({"max_workers": 2, "min_workers_per_region": {"a": 5}}, "--min-workers 5 is more than --max-workers 2"),
        ({"max_workers": 2, "max_workers_per_region": {"a": -1}}, "must not be negative"),
        ({"max_workers": -1}, "greater than or equal to 1"),
        ({"max_workers_per_region": {"a": 2}}, "need max_workers"),
        ({"address": "tcp://127.0.0.1:8786", "max_workers": 3}, "scales a 'local' cluster"),
    ],
)
def test_regional_cluster_block_refuses_bad_scaling(fields, message):
    from pydantic import ValidationError

    from blocks import RegionalCluster

    with pytest.raises(ValidationError, match=message):
        RegionalCluster(**fields)


def _half_second(i: int) -> int:
    import time

    time.sleep(0.5)
    return i


def test_a_real_schedulers_backlog_in_a_becomes_an_update_service_call_on_as_service_only(ecs, client):
    """The session's scheduler process (2 + 2 workers) reports the backlog; ECS is told, within the bounds."""
    from proximate.autoscale import ClientSchedulerView

    bounds = {"a": RegionBounds(2, 4), "b": RegionBounds(2, 4)}  # at the minimum already: nothing is retired
    backend = ECSBackend(_services(), client_factory=ecs.__getitem__, bounds=bounds)
    scaler = Autoscaler(ClientSchedulerView(client), backend, AdaptivePolicy(bounds))
    scaler.step()  # no backlog: both services go up to their minimum of 2
    assert backend.updates == [("a", 2), ("b", 2)]
    # 60 half-second tasks: a backlog of 30 s on 2 workers, twice what a's maximum of 4 clears in the policy's
    # target duration, so a's request reaches 4 before the backlog drains even on a slow machine.
    futures = [client.submit(_half_second, i, resources={"pool-a": 0}, pure=False) for i in range(60)]
    try:
        deadline = time.monotonic() + 40
        while backend.requested("a") < 4 and time.monotonic() < deadline:
            scaler.step()
            time.sleep(0.2)
        assert (_desired(ecs, "a"), _desired(ecs, "b")) == (4, 2), scaler.history[-1]
        assert scaler.history[-1].tasks["b"] == 0 and scaler.history[-1].workers == {"a": 2, "b": 2}
    finally:
        client.cancel(futures)
    assert backend.errors == [] and scaler.errors == []


@pytest.mark.slow  # over 10 s under load (DEVELOPERS.md, "The fast tier")
def test_the_autoscale_command_drives_each_regions_ecs_service_from_a_real_scheduler(ecs, s3_server, cluster, client):
    """`proximate autoscale`, the production runner, as its own process: a backlog pinned to a raises a's service
    to its maximum, b's stays at its minimum; SIGTERM stops it cleanly, reporting its updates."""
    import os
    import signal
    import subprocess
    import sys

    services = ["--ecs-service", "a=eu-west-2:proximate-a/workers", "--ecs-service", "b=us-east-1:proximate-b/workers"]
    bounds = ["--min-workers", "2", "--max-workers", "4", "--scale-interval", "0.3"]
    cmd = [sys.executable, "-m", "proximate.cli", "autoscale", "--scheduler", cluster.address, *services, *bounds,
           "--ecs-endpoint-url", s3_server]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    futures = []
    try:
        deadline = time.monotonic() + 60
        while (_desired(ecs, "a"), _desired(ecs, "b")) != (2, 2):  # both raised to their minimum first
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.2)
        futures = [client.submit(_half_second, i, resources={"pool-a": 0}, pure=False) for i in range(60)]
        while _desired(ecs, "a") < 4:
            assert proc.poll() is None and time.monotonic() < deadline, "a's service never reached its maximum"
            time.sleep(0.2)
        assert _desired(ecs, "b") == 2
    finally:
        client.cancel(futures)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "desiredCount updates a=2, b=2, a=" in out and "0 error(s)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ecs-service", "a=eu-west-2/proximate-a"], "expected REGION=AWS_REGION:CLUSTER/SERVICE"),
        (["--ecs-service", "a=eu-west-2:c/s", "--max-workers", "b=3"], "'b'"),
        (["--ecs-service", "a=eu-west-2:c/s", "--max-workers", "2", "--min-workers", "3"], "3"),
        (["--ecs-service", "a=eu-west-2:c/s"], "--max-workers"),
    ],
)
def test_the_autoscale_command_refuses_bad_input_before_connecting(extra, message, capsys):
    code = cli.main(["autoscale", "--scheduler", "tcp://127.0.0.1:1", *extra])
    assert code == 2 and message in capsys.readouterr().err
