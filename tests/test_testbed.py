"""The Met Office scenario and its faults on the testbed: regions as network namespaces joined by shaped links.

Runs as root only (namespaces). One testbed for the module: client + ecmwf (2 workers) + gcp (1 worker), TLS,
a short worker TTL, no-workers bound and link bound so the cut tests are quick. The client side runs in the
client namespace through the testbed's agent (``tb_agent.call``); the functions it runs are defined here, at
module level, so they travel by reference. Link byte counters are read on the host around each call, or inside
the agent around a ``locality()`` block to compare with its report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from proximate.testing import synthetic
from proximate.testing.listeners import tree_listeners
from proximate.testing.testbed import Testbed, TestbedError, netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the testbed needs root (network namespaces)")

PRED = "metoffice/predictions.nc"
OBS = "metoffice/observations.nc"
SLOW = "slow/v.nc"
NLAT, NLON, HEIGHTS = 90, 180, 16
# Short enough to keep the cut-link test quick, long enough that a heartbeat late on a loaded 2-core machine
# does not drop a healthy worker.
WORKER_TTL = 10.0
#: Bytes two transfers of the same keys may differ by in message headers (a message frame is tens of bytes).
FRAMING_SLACK = 1024
TCP_TIMEOUT = 12.0
NO_WORKERS_TIMEOUT = 5.0
# Below Dask's connect timeout (30 s): a cut link errs once the first fetch attempt has failed.
LINK_TIMEOUT = 20.0
CONNECT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Testbed:
    """The testbed, with ~33 MB of predictions in ecmwf, observations in gcp and a small slow dataset."""
    workdir = tmp_path_factory.mktemp("testbed")
    tb = Testbed(
        ["ecmwf", "gcp"],
        workers_per_region={"ecmwf": 2, "gcp": 1},
        worker_ttl=WORKER_TTL,
        tcp_timeout=TCP_TIMEOUT,
        no_workers_timeout=NO_WORKERS_TIMEOUT,
        link_timeout=LINK_TIMEOUT,
        workdir=workdir,
        memory_limit="1GiB",
    )
    try:
        tb.up()
        fc = synthetic.forecast(realizations=32, heights=HEIGHTS, nlat=NLAT, nlon=NLON)
        synthetic.write_netcdf(fc, tb.root("ecmwf") / PRED, chunks={"realization": 1, "height": 4})
        synthetic.write_netcdf(synthetic.observations(nlat=NLAT, nlon=NLON), tb.root("gcp") / OBS)
        slow = xr.Dataset({"v": (("t", "y"), np.arange(40 * 500, dtype="f8").reshape(40, 500))})
        synthetic.write_netcdf(slow, tb.root("ecmwf") / SLOW, chunks={"t": 1})
        yield tb
    finally:
        tb.down()
    assert not [n for n in netns.list_namespaces() if n.startswith(f"{tb.name}-")]


@pytest.fixture(scope="module")
def tb_agent(bed):
    with bed.agent() as agent:
        yield agent


# -- functions the agent runs in the client namespace ---------------------------------------------------------


def metoffice_routed(height: int = 10) -> dict:
    """The notebook's expression, routed: open in each region, compute, report."""
    import proximate
    from proximate.testing.testbed import connect
    from proximate.testing.testbed.bed import link_counters

    with connect(set_as_default=True) as client:
        pred = proximate.open_dataset("ecmwf", PRED, chunks="auto", client=client)
        obs = proximate.open_dataset("gcp", OBS, chunks="auto", client=client)
        before = link_counters()  # the report's own window, read from inside the client namespace
        with proximate.propagate_pools(), proximate.locality(client) as report:
            mean = pred.air_temperature.mean("realization").isel(height=height)
            result = (mean - obs.air_temperature).compute()
        after = link_counters()
    return {
        "window_links": sum(sum(after[k].values()) - sum(before[k].values()) for k in after),
        "control_bytes": report.control_bytes,
        "result": result,
        "minimum": min(mean.nbytes, obs.air_temperature.nbytes) + result.nbytes,
        "forecast_bytes": pred.air_temperature.nbytes,
        "cross_region_bytes": report.cross_region_bytes,
        "tasks_by_region": report.tasks_by_region,
    }


def metoffice_routed_timed(height: int = 10) -> dict:
    """:func:`metoffice_routed`, its wall time, and the error it raised (type and message) if any."""
    start = time.monotonic()
    try:
        out = metoffice_routed(height)
    except Exception as exc:  # the test checks which
        return {"error": type(exc).__name__, "message": str(exc), "seconds": time.monotonic() - start}
    return {**out, "error": None, "seconds": time.monotonic() - start}


def forecast_reduced_in_place(height: int = 10) -> float:
    """The same forecast graph reduced to one number inside ecmwf: the control traffic of such a run."""
    import proximate
    from proximate.testing.testbed import connect

    with connect(set_as_default=True) as client:
        pred = proximate.open_dataset("ecmwf", PRED, chunks="auto", client=client)
        return float(pred.air_temperature.mean("realization").isel(height=height).sum().compute())


def misrouted_read() -> None:
    from proximate.client import worker_regions
    from proximate.datasets import RegionPath
    from proximate.io import open_local
    from proximate.testing.testbed import connect

    with connect() as client:
        # Forced onto a gcp worker by name: a pool annotation no longer can, the router pins a task to the region
        # of the RegionPath it reads (#32).
        worker_gcp = next(address for address, region in worker_regions(client).items() if region == "gcp")
        client.submit(open_local, RegionPath("ecmwf", PRED), workers=[worker_gcp], pure=False).result(60)


def bucket_listing(region_of_worker: str, bucket: str) -> list[str]:
    """List ``bucket`` from a worker of ``region_of_worker``, through that worker's own S3 endpoint."""
    from proximate.testing.testbed import connect

    def listing(bucket: str) -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    with connect() as client:
        return client.submit(listing, bucket, resources={f"pool-{region_of_worker}": 0}, pure=False).result(60)


def plaintext_and_foreign_ca_refused(tls_address: str) -> list[str]:
    """Try a plaintext client and a client with another CA's certificate; return those the scheduler refused."""
    import dask
    from distributed import Client
    from distributed.security import Security

    refused = []
    for label, address, kwargs in (
        ("plaintext", tls_address.replace("tls://", "tcp://"), {}),
        ("foreign CA", tls_address, {"security": Security.temporary()}),
    ):
        # the client side must be willing, so that any refusal is the scheduler's
        with dask.config.set({"distributed.comm.require-encryption": False}):
            try:
                with Client(address, timeout=5, set_as_default=False, **kwargs):
                    pass
            except (OSError, TimeoutError):
                refused.append(label)
    return refused


def tls_cluster_works() -> tuple[str, int]:
    from proximate.testing.testbed import connect

    with connect() as client:
        return client.scheduler.address, client.submit(sum, [1, 2, 3], resources={"pool-gcp": 0}).result(30)


def _slow_block(block: np.ndarray) -> np.ndarray:
    time.sleep(0.3)
    return block * 2


def _start_slow(client):
    import proximate

    ds = proximate.open_dataset("ecmwf", SLOW, client=client, chunks={"t": 1})
    future = client.compute(ds.v.data.map_blocks(_slow_block, dtype="f8").sum())
    deadline = time.monotonic() + 60
    while len(client.get_task_stream(count=1000)) < 8:  # well under way (40 slow blocks in all)
        assert time.monotonic() < deadline, "the slow computation did not start"
        time.sleep(0.1)
    assert not future.done()
    return future


def kill_worker_mid_run(pid: int) -> dict:
    import proximate
    from proximate.testing.testbed import connect

    with connect() as client, proximate.locality(client) as report:
        future = _start_slow(client)
        os.killpg(pid, signal.SIGKILL)  # the whole worker: nanny and its process
        total = future.result(timeout=120)
    return {"total": total, "tasks_by_region": report.tasks_by_region}


def cut_region_mid_run(ends: list) -> tuple[str, str, float]:
    """Start a slow ecmwf computation, take ecmwf's links down, time how long until it errs."""
    from proximate.testing.testbed import connect

    with connect() as client:
        future = _start_slow(client)
        for end in ends:
            netns.link_down(end)
        start = time.monotonic()
        try:
            future.result(timeout=120)
        except Exception as exc:  # the test checks which
            return type(exc).__name__, str(exc), time.monotonic() - start
    return "none", "", time.monotonic() - start


def expected_difference(bed: Testbed, height: int = 10) -> xr.DataArray:
    """Plain single-process xarray on the same files."""
    with xr.open_dataset(bed.root("ecmwf") / PRED) as p, xr.open_dataset(bed.root("gcp") / OBS) as o:
        return (p.air_temperature.mean("realization").isel(height=height) - o.air_temperature).load()


# -- the scenario --------------------------------------------------------------------------------------------


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_metoffice_result_equals_plain_xarray_and_bulk_bytes_never_leave_ecmwf(bed, tb_agent):
    tb_agent.call(forecast_reduced_in_place)  # warm: first imports and opens are not what we measure
    before = bed.link_bytes()
    tb_agent.call(forecast_reduced_in_place)
    control = bed.region_link_bytes(bed.bytes_delta(before, bed.link_bytes()), "ecmwf")

    before = bed.link_bytes()
    out = tb_agent.call(metoffice_routed)
    delta = bed.bytes_delta(before, bed.link_bytes())

    xr.testing.assert_allclose(out["result"], expected_difference(bed))
    ecmwf = bed.region_link_bytes(delta, "ecmwf")
    assert out["forecast_bytes"] >= 30 * 2**20
    # ground truth from the links: far below the forecast, close to the minimum plus measured control traffic
    assert ecmwf < out["forecast_bytes"] / 10, delta
    assert ecmwf <= control + 1.1 * out["minimum"] + 64 * 2**10, (delta, control, out["minimum"])
    assert set(out["tasks_by_region"]) <= {"ecmwf", "gcp"}
    # the report's data plus its control bytes account for what the links carried over its window
    reported = out["cross_region_bytes"] + sum(out["control_bytes"].values())
    assert set(out["control_bytes"]) == {"ecmwf", "gcp"}, out["control_bytes"]
    assert abs(reported - out["window_links"]) <= 0.1 * out["window_links"], (reported, out["window_links"])
    print(
        f"\necmwf links {ecmwf:,} B (control {control:,} B, minimum {out['minimum']:,} B); {delta}; report: data "
        f"{out['cross_region_bytes']:,} + control {out['control_bytes']} B vs links {out['window_links']:,} B"
    )


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_misrouted_read_fails_naming_region_and_path(tb_agent):
    with pytest.raises(FileNotFoundError, match=r"predictions\.nc.*region 'ecmwf' is not reachable from region 'gcp'"):
        tb_agent.call(misrouted_read)


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_each_regions_s3_is_reachable_only_inside_it(bed, tb_agent):
    bed.put_object("ecmwf", "raw/a.txt", b"hello")
    assert tb_agent.call(bucket_listing, "ecmwf", "proximate-ecmwf") == ["raw/a.txt"]
    # gcp's endpoint is gcp's own server: ecmwf's bucket is not there
    with pytest.raises(Exception, match="NoSuchBucket"):
        tb_agent.call(bucket_listing, "gcp", "proximate-ecmwf")
    assert netns.port_open(bed.namespace("ecmwf"), "127.0.0.1", 9000)
    assert not netns.port_open(bed.namespace("client"), bed.address("ecmwf"), 9000)
    assert not netns.port_open(bed.namespace("gcp"), bed.address("ecmwf"), 9000)


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_tls_cluster_works_and_plaintext_is_refused(bed, tb_agent):
    address, total = tb_agent.call(tls_cluster_works)
    assert address.startswith("tls://") and total == 6
    assert tb_agent.call(plaintext_and_foreign_ca_refused, bed.scheduler_address) == ["plaintext", "foreign CA"]


@pytest.mark.slow  # the testbed's namespaces and processes (8 s to build): kept out of the fast tier
def test_no_testbed_process_listens_on_a_wildcard(bed):
    """Each process binds its namespace's address (or loopback there); the scheduler serves no HTTP at all."""
    bound = {name: tree_listeners(proc.pid) for name, proc in bed.processes.items()}
    assert any(bound.values()) and not [str(s) for found in bound.values() for s in found if s.wildcard], bound
    port = int(bed.scheduler_address.rsplit(":", 1)[1])
    assert [(s.ip, s.port) for s in bound["scheduler"]] == [(bed.address("client"), port)]
    for name in bed.worker_names():  # nanny and worker on the region's address, /health on its loopback
        region = bed.processes[name].info["node"]
        assert {s.ip for s in bound[name]} == {bed.address(region), "127.0.0.1"}, (name, bound[name])


# -- faults --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_killed_worker_tasks_rerun_in_the_same_region(bed, tb_agent):
    pid = bed.processes["ecmwf-0"].pid
    out = tb_agent.call(kill_worker_mid_run, pid)
    assert out["total"] == pytest.approx(2 * np.arange(40 * 500, dtype="f8").sum())
    assert set(out["tasks_by_region"]) == {"ecmwf"}, out["tasks_by_region"]
    bed.restart_workers("ecmwf", ["ecmwf-0"])


def _wait_for_log(bed: Testbed, names: list[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(text in Path(bed.processes[n].log).read_text(errors="replace") for n in names):
        assert time.monotonic() < deadline, f"{text!r} not in the logs of {names} within {timeout} s"
        time.sleep(0.5)


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_region_cut_off_mid_run_errs_naming_it_within_the_bound_then_its_workers_rejoin(bed, tb_agent):
    ends = [link.end_of("ecmwf") for link in bed.links_of("ecmwf")]
    names = bed.worker_names("ecmwf")
    try:
        kind, message, seconds = tb_agent.call(cut_region_mid_run, ends, timeout=180)
        # Each nanny says why it restarts its worker (the worker noticed the dead stream after ~TCP_TIMEOUT).
        _wait_for_log(bed, names, "lost its scheduler", timeout=3 * TCP_TIMEOUT)
    finally:
        bed.restore("ecmwf")
    restored = time.monotonic()
    assert kind == "RegionUnavailableError", message
    assert "region 'ecmwf'" in message
    # The scheduler notices a cut region by a message to it timing out (TCP_TIMEOUT) or, when none is in flight,
    # by its workers' missing heartbeats (within 2 TTLs); then the router waits out its bound.
    assert seconds < max(TCP_TIMEOUT, 2 * WORKER_TTL) + NO_WORKERS_TIMEOUT + 10, seconds
    # Nobody restarts them: the same processes (nanny kept, worker restarted) register again.
    bed.wait_for_workers(names)
    rejoined = time.monotonic() - restored
    assert rejoined < 60, rejoined
    print(f"\nRegionUnavailableError after {seconds:.1f} s: {message}; workers rejoined {rejoined:.1f} s after restore")
    out = tb_agent.call(metoffice_routed)
    xr.testing.assert_allclose(out["result"], expected_difference(bed))


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_inter_region_link_cut_errs_naming_both_regions_and_the_link_within_the_bound(bed, tb_agent):
    bed.cut_link("gcp", "ecmwf")  # both regions keep their links to the client namespace, hence the scheduler
    try:
        out = tb_agent.call(metoffice_routed_timed, timeout=180)
    finally:
        bed.restore_link("gcp", "ecmwf")
    assert out["error"] == "RegionLinkError", out
    assert "link ecmwf-gcp broken" in out["message"], out["message"]
    assert "region 'ecmwf'" in out["message"] and "region 'gcp'" in out["message"], out["message"]
    # The first failed attempt ends after Dask's connect timeout; the router errs once the path has failed for
    # LINK_TIMEOUT (whichever is later), checked every 0.5 s.
    assert out["seconds"] < max(LINK_TIMEOUT, CONNECT_TIMEOUT) + 15, out
    print(f"\nRegionLinkError after {out['seconds']:.1f} s: {out['message']}")


@pytest.mark.slow  # the module's testbed: namespaces, S3 and Dask per region, a TLS scheduler
def test_a_10s_inter_region_cut_heals_with_the_same_result_and_cross_region_bytes(bed, tb_agent):
    uncut = tb_agent.call(metoffice_routed_timed)
    assert uncut["error"] is None, uncut
    bed.cut_link("gcp", "ecmwf")
    restore = threading.Timer(10.0, bed.restore_link, ("gcp", "ecmwf"))
    restore.start()
    try:
        out = tb_agent.call(metoffice_routed_timed, timeout=180)
    finally:
        restore.join()
    assert out["error"] is None, out
    assert out["seconds"] > 9, out  # the cross-region transfer had to wait for the link
    xr.testing.assert_allclose(out["result"], uncut["result"])
    # The same data crossed, nothing twice: equal up to the framing of Dask's messages (after a failed fetch it
    # may batch the keys into other messages; 41 B apart in one run at load 13), and never below the data itself.
    assert out["minimum"] <= out["cross_region_bytes"] <= uncut["cross_region_bytes"] + FRAMING_SLACK, (out, uncut)
    print(f"\n10 s cut: completed in {out['seconds']:.1f} s (uncut {uncut['seconds']:.1f} s)")


# -- bad input -----------------------------------------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proximate.cli", "testbed", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def _left(name: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"{name}-")]


def test_up_refuses_without_root_and_without_ip_or_tc(tmp_path, monkeypatch):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no /usr/sbin: no ip, no tc
    notools = _cli("up", "--name", "pxtnotools", "--workdir", str(tmp_path / "w"), env=env)
    assert notools.returncode == 1 and "'ip' command" in notools.stderr, notools.stderr
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match="needs root"):
        Testbed(["ecmwf"], name="pxtnoroot", workdir=tmp_path / "w").up()
    assert not _left("pxtnoroot") and not _left("pxtnotools")


def test_a_rate_tbf_refuses_fails_naming_it_and_leaves_nothing(tmp_path):
    with pytest.raises(TestbedError, match=r"rate '0bit'.*nothing was left behind"):
        Testbed(["ecmwf"], name="pxtrate", rate="0bit", workdir=tmp_path).up()
    assert not _left("pxtrate")
    with pytest.raises(Exception, match="invalid link rate 'fast'"):
        Testbed(["ecmwf"], name="pxtrate", rate="fast")


def test_a_namespace_name_clash_is_refused_and_the_other_namespace_kept(tmp_path):
    netns.add_namespace("pxtclash-gcp")
    try:
        with pytest.raises(TestbedError, match="namespace 'pxtclash-gcp' already exists"):
            Testbed(["ecmwf", "gcp"], name="pxtclash", workdir=tmp_path).up()
        assert _left("pxtclash") == ["pxtclash-gcp"]
    finally:
        netns.delete_namespace("pxtclash-gcp")
