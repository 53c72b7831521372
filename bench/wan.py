"""The Met Office table over shaped links: proximate routed against a centralised run, on the testbed (root).

Float32 predictions (``--sizes-gb``) in region ``ecmwf``, observations in ``gcp``, scheduler and client in the
client namespace, every link shaped with tbf at each of ``--rates``. Both sides open the files as the
notebook does (``chunks='auto'``) and compute its expression, ``mean('realization').isel(height=10) - obs``:

- routed: ``proximate.open_dataset`` in each region, the expression, ``compute()`` (TLS cluster, 2 workers per
  region);
- centralised: plain xarray + Dask (a plain scheduler and ``--central-workers`` workers, all in the client
  namespace) reading the same files across the links with HTTP range reads (fsspec's ``HTTPFileSystem`` and
  h5netcdf, fsspec ``cache_type`` ``--central-cache``, default ``none``: each read fetches exactly the bytes
  asked for, no read-ahead blocks fetched again by neighbouring tasks) from a file server in each region; the file
  servers log every range served, so the run prints the bytes read (distinct) beside what crossed the links.
  HTTP and not the region's S3 server (moto), because moto reads a whole object for every ranged GET, which
  would measure moto rather than the link (see ``proximate.testing.testbed.fileserver``).

Before the runs of each case a control run reduces the forecast to one number inside ``ecmwf`` (the same
graph, nothing bulky crosses): its link bytes are the control traffic (graph submission, task messages,
heartbeats, TLS and TCP framing) and its wall time the compute time on one region's workers. Runs alternate,
``--rounds`` each. Per run: wall time, bytes on each link (``/sys/class/net`` counters, both directions),
proximate's reported cross-region bytes, the physical minimum (the smaller operand at the selected level
plus the result). Results of the two must be allclose.

Each routed run also reads the link counters from inside the client namespace right around its
``proximate.locality()`` block and prints, side by side, the report's data bytes (workers' transfer logs), its
control bytes (the scheduler's connections to each region, kernel counters) and the links' bytes over the same
window, with (data + control) / links. ``--forecast-chunks`` opens the forecast with other chunks (the
region-local part; a JSON dict such as ``'{"realization": 8}'``, or ``auto``) to compare per-task control
bytes; ``--heartbeat-interval`` sets the scheduler's heartbeat floor (``PROXIMATE_HEARTBEAT_INTERVAL``);
``--idle SECONDS`` measures what the idle cluster puts on each region's link and scales it to a day.

    sudo python bench/wan.py --sizes-gb 1 --rates 100mbit --rounds 2 --workdir /var/tmp/wan
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import xarray as xr

from proximate.testing import synthetic
from proximate.testing.testbed import Testbed, netns

NLAT, NLON, HEIGHTS = 180, 360, 16
HEIGHT = 10
OBS = "observations.nc"


def forecast_name(gb: float) -> str:
    return f"predictions-{gb:g}GB.nc"


def prepare(bed: Testbed, sizes: list[float]) -> None:
    """Write the forecasts (once per size; kept in a given --workdir) and the observations."""
    obs = bed.root("gcp") / OBS
    if not obs.exists():
        synthetic.write_netcdf(synthetic.observations(nlat=NLAT, nlon=NLON), obs)
    for gb in sizes:
        path = bed.root("ecmwf") / forecast_name(gb)
        if path.exists():
            continue
        t0 = time.perf_counter()
        realizations = synthetic.forecast_shape_for_bytes(int(gb * 1e9), heights=HEIGHTS, nlat=NLAT, nlon=NLON)
        fc = synthetic.forecast(realizations=realizations, heights=HEIGHTS, nlat=NLAT, nlon=NLON)
        synthetic.write_netcdf(fc, path, chunks={"realization": 1, "height": 4})
        del fc
        print(
            f"# wrote {path.name} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True
        )


# -- run in the client namespace, through the testbed's agent -------------------------------------------------


def control_run(pred: str) -> dict:
    """Everything a routed run does but the bulk: open both datasets, the same forecast graph and the locality
    report, each side reduced to one number in its own region. Its link bytes are the control traffic; its wall
    time the compute time on one region's workers (the regions work in parallel)."""
    import dask

    import proximate
    from proximate.testing.testbed import connect

    with connect(set_as_default=True, timeout=60) as client:
        t0 = time.perf_counter()
        forecast = proximate.open_dataset("ecmwf", pred, chunks="auto", client=client)
        obs = proximate.open_dataset("gcp", OBS, chunks="auto", client=client)
        with proximate.propagate_pools(), proximate.locality(client):
            mean = forecast.air_temperature.mean("realization").isel(height=HEIGHT)
            values = dask.compute(mean.sum(), obs.air_temperature.sum())
        return {"wall": time.perf_counter() - t0, "values": [float(v) for v in values]}


def routed_run(pred: str, chunks: str | dict = "auto") -> dict:
    import proximate
    from proximate.testing.testbed import connect
    from proximate.testing.testbed.bed import link_counters

    with connect(set_as_default=True, timeout=60) as client:
        t0 = time.perf_counter()
        forecast = proximate.open_dataset("ecmwf", pred, chunks=chunks, client=client)
        obs = proximate.open_dataset("gcp", OBS, chunks="auto", client=client)
        before = link_counters()  # the same window as the report's, from inside the client namespace
        with proximate.propagate_pools(), proximate.locality(client) as report:
            mean = forecast.air_temperature.mean("realization").isel(height=HEIGHT)
            result = (mean - obs.air_temperature).compute()
        after = link_counters()
        wall = time.perf_counter() - t0
    window = {link: sum(after[link].values()) - sum(before[link].values()) for link in after} if before else {}
    return {
        "wall": wall,
        "result": result,
        "reported": report.cross_region_bytes,
        "control": report.total_control_bytes,
        "control_by_region": report.control_bytes,
        "window_links": window,
        "tasks": sum(report.tasks_by_region.values()),
        "forecast_chunks": forecast.air_temperature.data.npartitions,
        "minimum": min(mean.nbytes, obs.air_temperature.nbytes) + result.nbytes,
        "forecast_bytes": forecast.air_temperature.nbytes,
    }


def idle_links(seconds: float) -> dict:
    """Bytes each link carries while the cluster does nothing for ``seconds``."""
    from proximate.testing.testbed.bed import link_counters

    before = link_counters()
    time.sleep(seconds)
    after = link_counters()
    return {link: sum(after[link].values()) - sum(before[link].values()) for link in after}


_CENTRAL: dict = {}


#: How the centralised reader's fsspec files cache. "none": every read h5py asks for is one HTTP range request of
#: exactly those bytes. fsspec's default ("readahead"-style "bytes" cache with 5 MiB blocks) fetched a block per read
#: into a cache private to each task's copy of the file object, so tasks reading neighbouring chunks fetched the same
#: blocks again: 1.87-2.4x the file crossed the link, about twice what a reader that moves what it reads pays.
CENTRAL_CACHE = "none"


def centralised_run(pred_url: str, obs_url: str, workers: int, scratch: str, cache_type: str = CENTRAL_CACHE) -> dict:
    """Plain xarray + Dask, workers only in the client region, files read across the links over HTTP."""
    import dask
    import fsspec

    from proximate.cluster import LocalRegionalCluster

    # a plain Dask cluster without TLS: the client's TLS settings (from the testbed's environment) stay out
    with dask.config.set({"distributed.comm.require-encryption": False}):
        if "cluster" not in _CENTRAL:  # started once per agent, on the client namespace's loopback
            Path(scratch).mkdir(parents=True, exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
            cluster = LocalRegionalCluster({"central": scratch}, workers_per_region=workers, router=False, env=env)
            _CENTRAL["cluster"] = cluster.start()
        with _CENTRAL["cluster"].client(timeout=60, set_as_default=False) as client:
            fs = fsspec.filesystem("http")
            t0 = time.perf_counter()
            pred = xr.open_dataset(fs.open(pred_url, cache_type=cache_type), engine="h5netcdf", chunks="auto")
            obs = xr.open_dataset(fs.open(obs_url, cache_type=cache_type), engine="h5netcdf", chunks="auto")
            expr = pred.air_temperature.mean("realization").isel(height=HEIGHT) - obs.air_temperature
            result = client.compute(expr).result()
            wall = time.perf_counter() - t0
    return {"wall": wall, "result": result}


def close_central() -> None:
    if "cluster" in _CENTRAL:
        _CENTRAL.pop("cluster").close()


# -- the host side ---------------------------------------------------------------------------------------------


def _links(bed: Testbed, delta: dict) -> str:
    return ", ".join(f"{name} {d['total'] / 2**20:,.2f}" for name, d in delta.items())


def ranges_mark(bed: Testbed) -> dict[str, int]:
    """Where each region's file server's range log ends now."""
    logs = {r: bed.services.ranges_log(r) for r in bed.regions}
    return {r: (p.stat().st_size if p.exists() else 0) for r, p in logs.items()}


def ranges_since(bed: Testbed, mark: dict[str, int]) -> tuple[int, int]:
    """(bytes served, distinct bytes read) by the file servers since ``mark``: served minus distinct is what a
    reader fetched again."""
    served = distinct = 0
    for region, offset in mark.items():
        path = bed.services.ranges_log(region)
        if not path.exists():
            continue
        with open(path) as log:
            log.seek(offset)
            by_file: dict[str, list[tuple[int, int]]] = {}
            for line in log:
                name, start, length = line.rsplit(" ", 2)
                by_file.setdefault(name, []).append((int(start), int(start) + int(length)))
        for spans in by_file.values():
            served += sum(end - start for start, end in spans)
            reach = -1
            for start, end in sorted(spans):  # union of the intervals
                if end > reach:
                    distinct += end - max(start, reach)
                    reach = end
    return served, distinct


def run_case(
    bed: Testbed,
    agent,
    gb: float,
    rate: str,
    rounds: int,
    workers: int,
    chunks: str | dict = "auto",
    cache_type: str = CENTRAL_CACHE,
) -> dict:
    pred = forecast_name(gb)
    mbit = netns.rate_bits(rate) / 1e6
    agent.call(routed_run, pred, chunks, timeout=None)  # warm: first imports and opens are not what is measured
    before = bed.link_bytes()
    control = agent.call(control_run, pred, timeout=None)
    control_bytes = sum(d["total"] for d in bed.bytes_delta(before, bed.link_bytes()).values())
    print(
        f"\n## {gb:g} GB at {rate}: control run {control['wall']:.1f} s, {control_bytes / 2**20:.2f} MiB on links",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"routed": [], "centralised": []}
    urls = (bed.file_url("ecmwf", pred), bed.file_url("gcp", OBS))
    for i in range(rounds):
        order = ["routed", "centralised"] if i % 2 == 0 else ["centralised", "routed"]
        for kind in order:
            before = bed.link_bytes()
            if kind == "routed":
                out = agent.call(routed_run, pred, chunks, timeout=None)
            else:
                scratch = str(bed.workdir / "central")
                mark = ranges_mark(bed)
                out = agent.call(centralised_run, *urls, workers, scratch, cache_type, timeout=None)
                out["served"], out["read"] = ranges_since(bed, mark)
            delta = bed.bytes_delta(before, bed.link_bytes())
            out["links"] = sum(d["total"] for d in delta.values())
            runs[kind].append(out)
            reported = f", proximate reports {out['reported'] / 2**20:.2f} MiB" if kind == "routed" else ""
            if kind == "centralised":
                reported = (
                    f", read {out['read'] / 2**20:,.2f} MiB distinct, served {out['served'] / 2**20:,.2f} MiB "
                    f"(cache_type={cache_type!r}): links / read {out['links'] / max(out['read'], 1):.3f}"
                )
            if kind == "routed" and out["window_links"]:
                window = sum(out["window_links"].values())
                out["window_total"] = window
                reported += (
                    f"\n{'':>11} report window: data {out['reported']:,} B + control {out['control']:,} B "
                    f"({', '.join(f'{r} {n:,}' for r, n in out['control_by_region'].items())}) = "
                    f"{out['reported'] + out['control']:,} B; links {window:,} B; (data + control) / links "
                    f"{(out['reported'] + out['control']) / window:.3f}; {out['tasks']} tasks, "
                    f"{out['control'] / max(out['tasks'], 1):,.0f} control B per task"
                )
            print(
                f"{kind:>11} round {i + 1}: {out['wall']:7.1f} s, links {out['links'] / 2**20:9.2f} MiB "
                f"({_links(bed, delta)}){reported}",
                flush=True,
            )
        xr.testing.assert_allclose(runs["routed"][-1]["result"], runs["centralised"][-1]["result"])
    routed, central = runs["routed"], runs["centralised"]
    minimum = routed[0]["minimum"]
    r_wall = statistics.median(r["wall"] for r in routed)
    c_wall = statistics.median(r["wall"] for r in central)
    r_bytes = statistics.median(r["links"] for r in routed)
    c_bytes = statistics.median(r["links"] for r in central)
    bound = control["wall"] + minimum * 8 / (mbit * 1e6)
    summary = {
        "gb": gb,
        "rate": rate,
        "forecast_bytes": routed[0]["forecast_bytes"],
        "minimum": minimum,
        "control_bytes": control_bytes,
        "control_wall": control["wall"],
        "routed_wall": r_wall,
        "central_wall": c_wall,
        "routed_links": r_bytes,
        "central_links": c_bytes,
        "central_read": statistics.median(r["read"] for r in central),
        "central_served": statistics.median(r["served"] for r in central),
        "cache_type": cache_type,
        "reported": statistics.median(r["reported"] for r in routed),
        "control": statistics.median(r["control"] for r in routed),
        "window_links": statistics.median(r.get("window_total", 0) for r in routed),
        "tasks": routed[0]["tasks"],
        "forecast_chunks": routed[0]["forecast_chunks"],
        "chunks": chunks,
        "bytes_goal": r_bytes <= 1.1 * minimum + control_bytes,
        "wall_goal": r_wall <= 1.2 * bound,
        "wall_bound": bound,
    }
    print(
        f"minimum {minimum / 2**20:.2f} MiB; routed links {r_bytes / 2**20:.2f} MiB against 1.1 x minimum + "
        f"control ({1.1 * minimum / 2**20:.2f} + {control_bytes / 2**20:.2f} MiB) -> "
        f"{'met' if summary['bytes_goal'] else 'NOT met'}"
    )
    print(
        f"routed wall {r_wall:.1f} s vs 1.2 x (one region's compute {control['wall']:.1f} s + minimum at {rate} "
        f"{minimum * 8 / (mbit * 1e6):.2f} s) = {1.2 * bound:.1f} s -> {'met' if summary['wall_goal'] else 'NOT met'}"
    )
    print(
        f"centralised reader (cache_type={cache_type!r}): links {c_bytes / 2**20:,.1f} MiB for "
        f"{summary['central_read'] / 2**20:,.1f} MiB read = {c_bytes / max(summary['central_read'], 1):.3f}x "
        f"(goal <= 1.15x); served {summary['central_served'] / 2**20:,.1f} MiB"
    )
    print(
        f"centralised / routed: wall {c_wall / r_wall:.1f}x ({c_wall:.1f} / {r_wall:.1f} s), link bytes "
        f"{c_bytes / r_bytes:,.0f}x ({c_bytes / 2**20:,.1f} / {r_bytes / 2**20:.2f} MiB)"
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-gb", default="1,3", help="comma-separated forecast sizes (default 1,3)")
    parser.add_argument("--rates", default="100mbit,27mbit", help="comma-separated tc rates (default 100mbit,27mbit)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each kind per case, alternating")
    parser.add_argument("--workers-per-region", type=int, default=2)
    parser.add_argument("--central-workers", type=int, default=2)
    parser.add_argument(
        "--central-cache",
        default=CENTRAL_CACHE,
        help="fsspec cache_type of the centralised reader's files (default none: no read-ahead; 'bytes' was the "
        "unfair baseline before 2026-12-07)",
    )
    parser.add_argument("--workdir", help="keep the generated data here between runs")
    parser.add_argument("--forecast-chunks", default="auto", help="chunks of the forecast: auto or a JSON dict")
    parser.add_argument("--heartbeat-interval", type=float, help="the scheduler's heartbeat floor, seconds")
    parser.add_argument("--idle", type=float, default=0.0, help="also measure the idle cluster for SECONDS")
    args = parser.parse_args()
    chunks = args.forecast_chunks if args.forecast_chunks == "auto" else json.loads(args.forecast_chunks)
    sizes = [float(s) for s in args.sizes_gb.split(",")]
    rates = [r.strip() for r in args.rates.split(",")]
    for rate in rates:
        netns.rate_bits(rate)
    # The agent must import this file as a module (not __main__), so its functions travel by reference and
    # the centralised cluster it keeps between runs survives.
    here = str(Path(__file__).resolve().parent)
    sys.path.insert(0, here)
    import wan

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    if args.heartbeat_interval:
        env["PROXIMATE_HEARTBEAT_INTERVAL"] = str(args.heartbeat_interval)
    bed = Testbed(
        ["ecmwf", "gcp"],
        env=env,
        rate=rates[0],
        workers_per_region=args.workers_per_region,
        file_server=True,
        workdir=args.workdir,
    )
    summaries = []
    with bed:
        print(
            f"# testbed {bed.name} up: {bed.scheduler_address}, {args.workers_per_region} workers per region",
            flush=True,
        )
        prepare(bed, sizes)
        with bed.agent() as agent:
            for rate in rates:
                bed.set_rate(rate)
                for gb in sizes:
                    summaries.append(
                        wan.run_case(
                            bed, agent, gb, rate, args.rounds, args.central_workers, chunks, args.central_cache
                        )
                    )
            agent.call(wan.close_central)
            if args.idle:
                idle = agent.call(wan.idle_links, args.idle, timeout=None)
                for region in bed.regions:
                    per_day = idle[f"client-{region}"] / args.idle * 86400
                    print(
                        f"idle: link client-{region} {idle[f'client-{region}'] / args.idle:,.0f} B/s = "
                        f"{per_day / 1e9:.3f} GB/day ({args.workers_per_region} workers, heartbeat floor "
                        f"{args.heartbeat_interval or 'none'})"
                    )
    print(
        "\n| case | routed s | centralised s | time ratio | routed link MiB | centralised link MiB | bytes ratio |"
        " minimum MiB | control MiB | proximate-reported MiB | report data B | report control B | window links B |"
        " (data+control)/links | forecast chunks | tasks |"
    )
    print("| --- |" + " ---: |" * 15)
    for s in summaries:
        print(
            f"| {s['forecast_bytes'] / 1e9:.2f} GB, {s['rate']} | {s['routed_wall']:.1f} | {s['central_wall']:.1f} | "
            f"{s['central_wall'] / s['routed_wall']:.1f}x | {s['routed_links'] / 2**20:.2f} | "
            f"{s['central_links'] / 2**20:,.1f} | {s['central_links'] / s['routed_links']:,.0f}x | "
            f"{s['minimum'] / 2**20:.2f} | {s['control_bytes'] / 2**20:.2f} | {s['reported'] / 2**20:.2f} | "
            f"{s['reported']:,.0f} | {s['control']:,.0f} | {s['window_links']:,.0f} | "
            f"{(s['reported'] + s['control']) / max(s['window_links'], 1):.3f} | {s['forecast_chunks']} | "
            f"{s['tasks']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
