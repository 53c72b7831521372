"""Incremental indexing of one region: list it (in the region), compare with the catalog, extract what is new
or changed (in the region, batched), write records in bulk (where the catalog is), remove vanished ones.

Plain Python on a Dask client: :func:`run_index` is the pipeline, :class:`IndexStages` its stages;
``flows/catalog.py`` runs the same pipeline with each stage a coarse Prefect task, and the bench calls
:func:`index_region` directly.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proximate import config
from proximate.catalog.base import Catalog, Fingerprint, RecordsRejected
from proximate.catalog.extract import error_record, extract_in_region
from proximate.catalog.records import DatasetRecord, merge_with_previous, record_id
from proximate.formats import ZARR_MARKERS, fingerprint, is_zarr_store
from proximate.regions import RegionPathError, check_relative_path, local_root, pool_resource
from proximate.sandbox import LimitExceeded, Limits, describe_exit, run_bounded

#: The sync's private folder (manifest, partial downloads): never indexed.
SYNC_DIR = ".proximate-sync"
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".swp", "~")
#: The settings of one file's extraction limits (:mod:`proximate.config`): seconds it may take, and the address
#: space of its process in MiB.
EXTRACT_LIMIT_KEYS = {"wall_seconds": "catalog.extract.timeout", "memory_bytes": "catalog.extract.memory-mb"}
#: Their environment variables, named in the error records of a file stopped at a limit.
TIMEOUT_ENV = config.env_var(EXTRACT_LIMIT_KEYS["wall_seconds"])
MEMORY_ENV = config.env_var(EXTRACT_LIMIT_KEYS["memory_bytes"])
#: One file's memory and time when nothing sets them (its CPU bound follows the time: see :func:`extract_limits`).
DEFAULT_EXTRACT_LIMITS = Limits(
    memory_bytes=int(config.default(EXTRACT_LIMIT_KEYS["memory_bytes"]) * 2**20),
    wall_seconds=float(config.default(EXTRACT_LIMIT_KEYS["wall_seconds"])),
)

Listing = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


def is_indexable_name(rel: str) -> bool:
    """Whether a region-relative path may be a dataset: any file or store except hidden or sync-private ones
    and temporary files. The name never decides the format (content does, at extraction), so a GRIB file,
    a GeoTIFF or an HDF4 file gets its record like a NetCDF file, readable or not."""
    rel = dataset_path_of(rel)
    parts = Path(rel).parts
    if not parts or any(p.startswith(".") for p in parts) or SYNC_DIR in parts:
        return False
    return not Path(rel).name.lower().endswith(TEMP_SUFFIXES)


def list_datasets(root: Path) -> Listing:
    """Every dataset under ``root``: every file, and every Zarr store (whatever its name; not descended into)."""
    out: Listing = {}
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            full = here / d
            if is_zarr_store(full):
                rel = full.relative_to(root).as_posix()
                found = fingerprint(full) if is_indexable_name(rel) else None
                if found is not None:
                    out[rel] = found
            else:
                keep.append(d)
        dirs[:] = keep
        for f in files:
            rel = (here / f).relative_to(root).as_posix()
            # A path that cannot be followed (a symlink loop) is listed by its own entry: its extraction then
            # records why, instead of failing the whole listing. ``None``: removed while we walked.
            found = fingerprint(here / f) if is_indexable_name(rel) else None
            if found is not None:
                out[rel] = found
    return out


def list_region(region: str) -> Listing:
    """Worker-side: list this region's datasets under its local root."""
    return list_datasets(local_root(region))


def dataset_path_of(rel: str) -> str:
    """The dataset a synced object belongs to: a file inside ``x.zarr/`` belongs to the store ``x.zarr``."""
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            return Path(*parts[: i + 1]).as_posix()
    return rel


@dataclass
class IndexPlan:
    """What an incremental run will do."""

    extract: list[str]
    delete: list[str]
    unchanged: int = 0


def plan_changes(
    fingerprints: Mapping[str, Fingerprint],
    listing: Mapping[str, tuple[int, int]] | None = None,
    *,
    changed: Sequence[str] | None = None,
    deleted: Sequence[str] | None = None,
    etags: Mapping[str, str] | None = None,
) -> IndexPlan:
    """Compare what is on disk with what the catalog holds (size, mtime and, when known, ETag), or take the
    sync's word for it (``changed``/``deleted``) without listing."""
    etags = etags or {}
    if changed is not None or listing is None:
        extract = sorted({dataset_path_of(p) for p in (changed or []) if _valid(p) and _changes_a_dataset(p)})
        # A deleted object inside a Zarr store changes the store; only whole datasets are removed here.
        gone = sorted({p for p in (deleted or []) if _valid(p) and dataset_path_of(p) == p} - set(extract))
        extract += sorted({dataset_path_of(p) for p in (deleted or []) if _valid(p) and dataset_path_of(p) != p})
        extract = sorted(set(extract))
        return IndexPlan(extract=extract, delete=[p for p in gone if p in fingerprints], unchanged=0)
    extract, unchanged = [], 0
    for path, (size, mtime_ns) in sorted(listing.items()):
        fp = fingerprints.get(path)
        etag = etags.get(path)
        if fp is None or fp.size != size or fp.mtime_ns != mtime_ns or (etag is not None and etag != fp.etag):
            extract.append(path)
        else:
            unchanged += 1
    gone = sorted(set(fingerprints) - set(listing))
    if deleted:
        gone = sorted(set(gone) | ({p for p in deleted if _valid(p)} & set(fingerprints)))
    return IndexPlan(extract=extract, delete=gone, unchanged=unchanged)


def _changes_a_dataset(rel: str) -> bool:
    """Whether a synced object can change a dataset: an indexable file, or a Zarr store's metadata (``.zattrs``
    and friends are hidden names, but they change the store that holds them)."""
    return is_indexable_name(rel) or (Path(rel).name in ZARR_MARKERS and len(Path(rel).parts) > 1)


def _valid(path: str) -> bool:
    try:
        check_relative_path(path)
    except RegionPathError:
        return False
    return True


def enclosing_store(root: Path, rel: str) -> str:
    """The outermost Zarr store (whatever its name) that holds ``rel`` under ``root``, or ``rel`` itself: the
    sync names objects, and an object inside a store not called ``*.zarr`` changes that store."""
    parts = Path(rel).parts
    for i in range(1, len(parts)):
        if is_zarr_store(root.joinpath(*parts[:i])):
            return Path(*parts[:i]).as_posix()
    return rel


def extract_limits() -> Limits:
    """One file's extraction limits: :data:`TIMEOUT_ENV` (seconds) and :data:`MEMORY_ENV` (MiB), or their
    ``proximate.catalog.extract.*`` settings, :data:`DEFAULT_EXTRACT_LIMITS` otherwise.

    Returns:
        The limits. The CPU time is the wall-clock time times the cores: a file's time is what the variable bounds,
        and a reader's threads (Blosc decompresses on several) cannot use more CPU than that in that time, so the
        CPU bound only backs up the wall-clock one and never stops a file first.

    Raises:
        ValueError: Naming the variable whose value is not a positive number.

    Examples:
        >>> extract_limits().wall_seconds  # doctest: +SKIP
        120.0
    """
    limits = Limits.from_env(variables=EXTRACT_LIMIT_KEYS, defaults=DEFAULT_EXTRACT_LIMITS)
    return dataclasses.replace(limits, cpu_seconds=limits.wall_seconds * (os.cpu_count() or 1))


def extract_reply(region: str, path: str, etag: str | None) -> tuple[str, Any]:
    """Child side of :func:`extract_batch`: ``("record", DatasetRecord)``, ``("vanished", path)`` or
    ``("raise", exception)``, so that a failure the caller handles does not discard the child."""
    try:
        return "record", extract_in_region(region, path, etag)
    except FileNotFoundError:  # the caller checked the route (it runs in the region): nothing there any more
        return "vanished", path
    except BaseException as exc:
        return "raise", exc


def _extraction_failure(exc: LimitExceeded) -> str:
    """Why a file's extraction process was stopped, naming the variable that sets the limit it passed."""
    limits = exc.limits or extract_limits()
    if exc.limit == "start":
        return f"the extraction process did not start: {exc}"
    if exc.limit == "wall":
        return f"took longer than {limits.wall_seconds:g} s ({TIMEOUT_ENV}): stopped"
    if exc.limit == "cpu":
        return f"used more than {limits.cpu_seconds:g} s of CPU time ({TIMEOUT_ENV}): stopped"
    why = describe_exit(exc.returncode) if exc.returncode is not None else str(exc)
    return f"the extraction process died ({why}; memory limit {limits.memory_bytes // 2**20} MiB, {MEMORY_ENV})"


def extract_batch(region: str, paths: Sequence[str], etags: Mapping[str, str] | None = None) -> list[Any]:
    """Worker-side: records for a batch; a path that vanished since listing comes back as its plain string.

    Each file is extracted in a child process bounded in time and memory (:func:`proximate.sandbox.run_bounded`,
    limits from :func:`extract_limits`): a file that exceeds either gets an error record saying so, and the batch
    goes on.
    """
    etags = etags or {}
    root = local_root(region)
    out: list[Any] = []
    # Objects inside a store become the store (once), here where the region's file system is visible.
    stores = []
    for p in paths:
        try:
            stores.append(enclosing_store(root, p))
        except (OSError, ValueError):  # a loop or a name the file system refuses: the path's record says so
            stores.append(p)
    limits = extract_limits()
    for path in dict.fromkeys(stores):
        try:
            kind, value = run_bounded(
                extract_reply, region, path, etags.get(path), limits=limits,
                preload=("proximate.catalog.readers",),  # the readers' imports are paid before the file's clock
            )  # fmt: skip
        except LimitExceeded as exc:
            message = f"cannot read {region}:{path}: {_extraction_failure(exc)}"
            out.append(error_record(region, path, message, full=root / path, etag=etags.get(path)))
            continue
        if kind == "raise":
            raise value
        out.append(value)
    return out


@dataclass
class IndexReport:
    """What one run did, for the flow's artifact and the bench."""

    region: str
    listed: int | None = None
    unchanged: int = 0
    extracted: int = 0
    ok: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    #: (path, the catalog's reason) for every record the catalog refused to store (the others were stored).
    rejected: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Bytes of the extraction results the client received from the region (pickled, as Dask sends them).
    result_bytes: int = 0

    def refused_summary(self, shown: int = 5) -> str:
        """The records the catalog refused, as a run's failure message names them: the first ``shown`` with
        their reasons, and how many more.

        Args:
            shown: How many records to name.

        Returns:
            ``"a.nc (reason), b.nc (reason) and 3 more"``; ``""`` when the catalog refused none.

        Examples:
            >>> IndexReport("r", rejected=[("a.nc", "bad date"), ("b.nc", "bad date")]).refused_summary(1)
            'a.nc (bad date) and 1 more'
        """
        names = ", ".join(f"{path} ({reason})" for path, reason in self.rejected[:shown])
        more = f" and {len(self.rejected) - shown} more" if len(self.rejected) > shown else ""
        return names + more

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "listed": self.listed,
            "unchanged": self.unchanged,
            "extracted": self.extracted,
            "ok": self.ok,
            "errors": [list(e) for e in self.errors],
            "unsupported": [list(e) for e in self.unsupported],
            "deleted": self.deleted,
            "vanished": self.vanished,
            "rejected": [list(e) for e in self.rejected],
            "seconds": round(self.seconds, 3),
            "result_bytes": self.result_bytes,
        }


def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _write(catalog: Catalog, records: list[DatasetRecord], report: IndexReport) -> None:
    """Upsert ``records``; records the catalog refuses are named in the report and the run goes on (the
    catalog stored the others), so one record a server will not take never holds back a region."""
    try:
        catalog.upsert(records)
    except RecordsRejected as exc:
        paths = {r.id: r.path for r in records}
        report.rejected += sorted((paths.get(i, i), reason) for i, reason in exc.rejected.items())


def extract_and_write(
    client: Any,
    catalog: Catalog,
    region: str,
    paths: Sequence[str],
    *,
    etags: Mapping[str, str] | None = None,
    batch_size: int = 50,
    report: IndexReport | None = None,
) -> IndexReport:
    """Extract ``paths`` on the region's workers (one Dask task per batch) and upsert each batch as it lands;
    error records keep the previous good metadata (see :func:`proximate.catalog.records.merge_with_previous`)."""
    from distributed import as_completed

    report = report or IndexReport(region)
    start = time.perf_counter()
    batches = _batches(list(paths), max(1, batch_size))
    etags = dict(etags or {})
    futures = [
        client.submit(
            extract_batch,
            region,
            batch,
            {p: etags[p] for p in batch if p in etags},
            resources={pool_resource(region): 0},
            pure=False,
        )
        for batch in batches
    ]
    pending: list[DatasetRecord] = []
    for _future, results in as_completed(futures, with_results=True, loop=client.loop):
        report.result_bytes += len(pickle.dumps(results, protocol=5))
        records: list[DatasetRecord] = [r for r in results if isinstance(r, DatasetRecord)]
        report.vanished += [r for r in results if isinstance(r, str)]
        failed = [r for r in records if r.status == "error"]
        report.unsupported += [(r.path, r.error or "") for r in records if r.status == "unsupported"]
        if failed:
            previous = catalog.get_many([r.id for r in failed])
            merged = {r.id: merge_with_previous(r, previous.get(r.id)) for r in failed}
            records = [merged.get(r.id, r) for r in records]
            report.errors += [(r.path, r.error or "") for r in failed]
        # Writes go out in the catalog's bulk size, not per extraction batch: fewer, larger bulk requests
        # (OpenSearch builds one segment per request; osmem-server re-indexes small segments to merge them).
        pending += records
        if len(pending) >= catalog.batch_size:
            _write(catalog, pending, report)
            pending = []
        report.extracted += len(records)
        report.ok += sum(r.status == "ok" for r in records)
    if pending:
        _write(catalog, pending, report)
    if report.vanished:
        report.deleted += sorted(report.vanished)
        catalog.delete(record_id(region, p) for p in report.vanished)
    report.seconds += time.perf_counter() - start
    return report


def list_in_region(client: Any, region: str) -> Listing:
    """List the region's datasets on one of its workers (the client cannot see the region's file system)."""
    future = client.submit(list_region, region, resources={pool_resource(region): 0}, pure=False)
    return {k: (int(v[0]), int(v[1])) for k, v in future.result().items()}


class IndexStages:
    """The stages of an index run, each one call: list the region, plan against the catalog, extract and write,
    remove the vanished. :func:`run_index` runs them in order; the ``index-region`` flow subclasses this to run
    each stage as its Prefect task, so the pipeline is written once.

    Args:
        catalog: The catalog the stages read fingerprints from and write records to.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def list(self, client: Any, region: str) -> Listing:
        """Stage 1: the region's datasets, listed on one of its workers."""
        return list_in_region(client, region)

    def plan(
        self,
        region: str,
        listing: Listing | None,
        changed: Sequence[str] | None,
        deleted: Sequence[str] | None,
        etags: Mapping[str, str] | None,
    ) -> IndexPlan:
        """Stage 2: what is new, changed or gone, against the catalog's fingerprints."""
        return plan_changes(self.catalog.fingerprints(region), listing, changed=changed, deleted=deleted, etags=etags)

    def planned(self, region: str, plan: IndexPlan) -> None:
        """Called once the plan is known (the flow logs it); nothing by default."""

    def extract(
        self, client: Any, report: IndexReport, paths: Sequence[str], etags: Mapping[str, str] | None, batch_size: int
    ) -> IndexReport:
        """Stage 3: extract ``paths`` in the region and write their records (see :func:`extract_and_write`)."""
        return extract_and_write(
            client, self.catalog, report.region, paths, etags=etags, batch_size=batch_size, report=report
        )

    def remove(self, region: str, paths: Sequence[str]) -> None:
        """Stage 4: drop the records of datasets no longer in the region."""
        self.catalog.delete(record_id(region, p) for p in paths)


def run_index(
    client: Any,
    region: str,
    stages: IndexStages,
    *,
    changed: Sequence[str] | None = None,
    deleted: Sequence[str] | None = None,
    etags: Mapping[str, str] | None = None,
    batch_size: int = 50,
) -> IndexReport:
    """One incremental index run of ``region`` through ``stages``: the pipeline, defined once.

    Args:
        client: A Dask client of the cluster holding the region's workers.
        region: The region to index.
        stages: The stages to run (plain calls, or the flow's Prefect tasks).
        changed: Paths the sync changed (skips listing the region); ``None`` compares the region with the catalog.
        deleted: Paths the sync removed.
        etags: ETags per path, stored with the records and compared next time.
        batch_size: Datasets per Dask task.

    Returns:
        What the run listed, extracted, found broken and removed; ``seconds`` is the whole run.

    Examples:
        >>> with open_catalog("sqlite", sqlite_path="c.sqlite") as cat:  # doctest: +SKIP
        ...     report = run_index(client, "eu-west-2", IndexStages(cat))
    """
    start = time.perf_counter()
    listing = None if changed is not None else stages.list(client, region)
    plan = stages.plan(region, listing, changed, deleted, etags)
    stages.planned(region, plan)
    report = IndexReport(region, listed=None if listing is None else len(listing), unchanged=plan.unchanged)
    if plan.extract:
        report = stages.extract(client, report, plan.extract, etags, batch_size)
    if plan.delete:
        stages.remove(region, plan.delete)
        report.deleted = sorted(set(plan.delete) | set(report.deleted))
    report.seconds = time.perf_counter() - start
    return report


def index_region(client: Any, catalog: Catalog, region: str, **options: Any) -> IndexReport:
    """The whole incremental run, without Prefect: :func:`run_index` through plain :class:`IndexStages`.

    Args:
        client: A Dask client of the cluster holding the region's workers.
        catalog: The catalog to bring up to date.
        region: The region to index.
        **options: ``changed``, ``deleted``, ``etags``, ``batch_size``: see :func:`run_index`.

    Returns:
        The run's :class:`IndexReport`.

    Examples:
        >>> report = index_region(client, catalog, "eu-west-2", batch_size=100)  # doctest: +SKIP
    """
    return run_index(client, region, IndexStages(catalog), **options)


def _cell(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def summary_markdown(report: IndexReport, catalog_name: str = "", max_rows: int = 50) -> str:
    """The run summary published as a Prefect artifact."""
    rate = report.extracted / report.seconds if report.seconds > 0 else 0.0
    lines = [
        f"# Catalog index of region `{report.region}`",
        "",
        f"Catalog: {catalog_name}" if catalog_name else "",
        "",
        "| | |",
        "| --- | --- |",
        f"| datasets listed | {'(from the sync)' if report.listed is None else report.listed} |",
        f"| unchanged | {report.unchanged} |",
        f"| extracted | {report.extracted} ({rate:.0f}/s) |",
        f"| ok | {report.ok} |",
        f"| errors | {len(report.errors)} |",
        f"| not supported | {len(report.unsupported)} |",
        f"| removed | {len(report.deleted)} |",
        f"| refused by the catalog | {len(report.rejected)} |",
        f"| seconds | {report.seconds:.1f} |",
    ]
    tables = (
        ("Errors", "error", report.errors),
        ("Formats not supported", "reason", report.unsupported),
        ("Refused by the catalog (not stored; indexed again next run)", "reason", report.rejected),
    )
    for title, column, rows in tables:
        if rows:
            lines += ["", f"## {title}", "", f"| dataset | {column} |", "| --- | --- |"]
            lines += [f"| `{_cell(p, 120)}` | {_cell(e)} |" for p, e in rows[:max_rows]]
            if len(rows) > max_rows:
                lines.append(f"| … | {len(rows) - max_rows} more |")
    if report.deleted:
        lines += ["", "## Removed (no longer in the region)", ""]
        lines += [f"- `{_cell(p, 120)}`" for p in report.deleted[:max_rows]]
        if len(report.deleted) > max_rows:
            lines.append(f"- … {len(report.deleted) - max_rows} more")
    return "\n".join(lines) + "\n"
