"""What every flow shares: the cluster it runs on, the catalog it reads, where its results go, each decided once,
here, in the flow's process, then passed explicitly to the tasks.

Every flow reaches the multi-region cluster one way: its :class:`RegionalTaskRunner`, the flow's own
DaskTaskRunner, pointed at the cluster from inside the run once its parameters are checked (the analysis and table
flows submit their per-region Prefect tasks on it; the sync, index and nightly flows use its client): no
subflow per run (a subflow costs a flow run, its heartbeat wait and a bigger pickled context per task submit),
and no client or cluster for a run whose parameters are wrong.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect_dask import DaskTaskRunner
from prefect_dask.client import PrefectDaskClient

from blocks.catalog import CatalogConfig
from blocks.cluster import DEFAULT_CLUSTER_BLOCK, LOCAL, ClusterTaskRunner, RegionalCluster
from blocks.region import Region
from proximate.analysis import ParameterError
from proximate.catalog import CatalogSettings
from proximate.catalog.errors import CatalogError
from proximate.datasets import CatalogId, DatasetRefError, RegionPath, locate, parse_reference
from proximate.egress import EgressPlan, check_budget, plan_markdown
from proximate.errors import ProximateInputError
from proximate.locality_report import LocalityReport
from proximate.outputs import OutputPolicy

__all__ = [
    "DEFAULT_CATALOG_BLOCK",
    "DEFAULT_CLUSTER_BLOCK",
    "RegionalTaskRunner",
    "apply_egress_plan",
    "catalog_settings",
    "check_egress_parameter",
    "cluster_block",
    "fails_on_input_errors",
    "output_policy",
    "parse_references",
    "publish_plan",
    "run_on_cluster",
    "run_regions_on_cluster",
]

#: The CatalogConfig block the analysis flows read when no catalog is named, if one is saved under this name.
DEFAULT_CATALOG_BLOCK = "proximate-catalog"


#: The errors a run ends on with its message alone: bad parameters or inputs (ParameterError, AnalysisInputError,
#: TableInputError, DatasetRefError... all ProximateInputError) and a catalog that cannot answer as asked.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ProximateInputError, CatalogError)


#: Prefect's closing line for a run that ended on an input error, in place of "Finished in state Failed('<the
#: message>')", which would show the message a second time on the run page.
INPUT_ERROR_CLOSING_LINE = "Finished in state Failed (the input error above)"
# Ids of the flow runs whose input error the run's log already shows and whose closing line is still to come.
_input_error_runs: set[str] = set()


class _ClosingLineWithoutTheMessage(logging.Filter):
    """On Prefect's flow-run logger: the engine's "Finished in state Failed('...')" line of a run that
    :func:`fails_on_input_errors` ended becomes :data:`INPUT_ERROR_CLOSING_LINE`.

    Prefect 3 logs that line itself after the flow function returns, with the state's message in it, and has no
    setting to leave the message out; keeping the message in the state (for the API, the UI's state and Python
    callers) and out of the log line is done here, on the record, before any handler (the API's, the console's)
    sees it. Every other record passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = str(getattr(record, "flow_run_id", ""))
        if run_id in _input_error_runs and str(record.msg).startswith("Finished in state Failed"):
            _input_error_runs.discard(run_id)
            record.msg, record.args = INPUT_ERROR_CLOSING_LINE, ()
        return True


def _install_closing_line_filter() -> None:
    flow_runs = logging.getLogger("prefect.flow_runs")  # the engine's run logger (prefect.logging.flow_run_logger)
    if not any(isinstance(f, _ClosingLineWithoutTheMessage) for f in flow_runs.filters):
        flow_runs.addFilter(_ClosingLineWithoutTheMessage())


def fails_on_input_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make a flow function end its run Failed with the message of a parameter or input error, once, without a
    traceback on the run page.

    Left to Prefect, such an error is logged with its full traceback ("Encountered exception during execution")
    and again in the state message: a user who misspelt a variable reads a stack of library frames twice. Here
    the error's message is logged once at ERROR, the traceback only at DEBUG (for whoever debugs proximate), and
    the run ends in ``Failed(message=...)`` carrying the exception, so a Python caller of the flow still gets it
    raised; Prefect's closing line says :data:`INPUT_ERROR_CLOSING_LINE` instead of repeating the message. Any
    other exception is a bug and keeps Prefect's traceback.

    Put it under ``@flow`` (Prefect reads the parameters and docstring through ``functools.wraps``).

    Args:
        fn: The flow function.

    Returns:
        The wrapped function: its return value, or a Failed state on an error of :data:`INPUT_ERRORS`.

    Examples:
        >>> from prefect import flow
        >>> @flow(name="needs-positive")
        ... @fails_on_input_errors
        ... def needs_positive(n: int) -> int:
        ...     if n <= 0:
        ...         raise ParameterError("n", f"must be > 0, got {n}")
        ...     return n
        >>> needs_positive(-1)  # doctest: +SKIP
        Traceback (most recent call last):
        ParameterError: n: must be > 0, got -1
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except INPUT_ERRORS as exc:
            from prefect import get_run_logger
            from prefect.context import FlowRunContext
            from prefect.states import Failed

            log = get_run_logger()
            message = str(exc) or type(exc).__name__
            log.error("%s", message)
            log.debug("%s raised by %s", type(exc).__name__, fn.__name__, exc_info=exc)
            context = FlowRunContext.get()
            if context is not None and context.flow_run is not None:
                _install_closing_line_filter()
                _input_error_runs.add(str(context.flow_run.id))
            return Failed(message=message, data=exc)

    # Prefect validates parameters against the signature in the namespace of the function it holds (this module's,
    # for the wrapper): hand it the annotations already evaluated in the flow's own module.
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper


def _load_block(block_type: type, name: str) -> Any | None:
    try:
        return block_type.load(name)
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None


def catalog_settings(name: str | None, *, must_exist: bool = False) -> CatalogSettings:
    """The catalog a run uses: the saved ``CatalogConfig`` block ``name``; with no name, the block
    :data:`DEFAULT_CATALOG_BLOCK` when one is saved, else ``PROXIMATE_CATALOG``, else ``catalog/proximate.sqlite``
    under the flow's working directory.

    Args:
        name: A CatalogConfig block name, or empty for the default.
        must_exist: Refuse a SQLite catalog whose file does not exist (opening it would create an empty one, and a
            lookup in it fails with a misleading "no dataset").

    Raises:
        ParameterError: naming ``catalog``: no such block, or (``must_exist``) no such file.
    """
    if name:
        block = _load_block(CatalogConfig, name)
        if block is None:
            raise ParameterError(
                "catalog",
                f"no CatalogConfig block named {name!r}: save one (see docs/configuration.md) or leave it empty",
            )
        settings = block.settings()
    else:
        block = _load_block(CatalogConfig, DEFAULT_CATALOG_BLOCK)
        settings = block.settings() if block is not None else CatalogSettings.from_env()
    if must_exist and settings.backend == "sqlite" and not Path(settings.sqlite_path).is_file():
        raise ParameterError(
            "catalog",
            f"{name or 'the default catalog'} is {settings.describe()}, which does not exist: index data into it"
            " (the nightly flow) or name a saved CatalogConfig block",
        )
    return settings


def cluster_block(cluster: str = DEFAULT_CLUSTER_BLOCK, scheduler_address: str | None = None) -> RegionalCluster:
    """The cluster a run asks for, checked without connecting: ``scheduler_address`` when given, else the saved
    RegionalCluster block ``cluster``.

    Raises:
        ParameterError: naming ``cluster`` (no such block) or ``scheduler_address`` (not tcp:// or tls://).
    """
    if scheduler_address:
        try:
            return RegionalCluster(address=scheduler_address)
        except ValueError as exc:
            raise ParameterError(
                "scheduler_address", f"{scheduler_address!r} is not tcp://host:port or tls://host:port"
            ) from exc
    block = _load_block(RegionalCluster, cluster)
    if block is None:
        raise ParameterError(
            "cluster",
            f"no RegionalCluster block named {cluster!r}: save one (docs/configuration.md) or pass scheduler_address",
        )
    return block


def parse_references(refs: Mapping[str, str | Sequence[str]]) -> dict[str, list[RegionPath | CatalogId]]:
    """Each parameter's dataset references parsed (``datasets.parse_reference``), errors naming the parameter."""
    out: dict[str, list[RegionPath | CatalogId]] = {}
    for parameter, value in refs.items():
        values = [value] if isinstance(value, str) else list(value)
        try:
            out[parameter] = [parse_reference(v) for v in values]
        except ValueError as exc:  # RegionError, RegionPathError, DatasetRefError: kept, and naming the parameter
            raise type(exc)(f"{parameter}: {exc}") from exc
    return out


def locate_parameters(
    refs: Mapping[str, str | Sequence[str]],
    catalog: str | None,
    check_records: Callable[[list[Any]], None] | None = None,
) -> dict[str, list[RegionPath]]:
    """Where each parameter's datasets live: references parsed once, catalog ids looked up here, in the flow's
    process. Errors name the parameter.

    Args:
        refs: Each parameter's reference or references.
        catalog: The CatalogConfig block to look ids up in (empty: the default catalog).
        check_records: Called with the catalog records of each parameter's ids, to refuse them before any work.
    """
    parsed = parse_references(refs)
    if not any(isinstance(ref, CatalogId) for refs_ in parsed.values() for ref in refs_):
        return parsed  # type: ignore[return-value]
    out: dict[str, list[RegionPath]] = {}
    with catalog_settings(catalog, must_exist=True).open() as cat:
        for parameter, refs_ in parsed.items():
            try:
                out[parameter] = [locate(ref, cat) for ref in refs_]
            except DatasetRefError as exc:
                raise ParameterError(parameter, str(exc)) from exc
            if check_records is not None:
                check_records([cat.get(ref.id) for ref in refs_ if isinstance(ref, CatalogId)])
    return out


def output_policy() -> OutputPolicy:
    """Where this run's outputs may go: the results root and ``PROXIMATE_OUTPUT_ROOTS`` of the flow's process,
    never inside the data root or the source prefix of any saved Region block (nor this process's own region).

    Read once per run, in the flow's process, before any work: a deployment's ``output`` parameter is whatever its
    author typed, and the regions' data lives on the same file systems as the results.

    Returns:
        The policy :func:`proximate.outputs.resolve_output` and the writers check.

    Examples:
        >>> output_policy().allowed  # doctest: +SKIP
        ()
    """
    forbidden: dict[str, str] = {}
    for name, data in _saved_regions():
        if data.get("root"):
            forbidden[f"region {name}"] = str(data["root"])
        if str(data.get("source_url") or "").startswith("s3://"):
            forbidden[f"the source of region {name}"] = str(data["source_url"])
    return OutputPolicy.from_env(forbidden=forbidden)


def _saved_regions() -> list[tuple[str, dict[str, Any]]]:
    """Every saved Region block's name and fields, in one API call (none when the type is not registered)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with get_client(sync_client=True) as client:
            documents = client.read_block_documents_by_type(Region.get_block_type_slug(), include_secrets=False)
    except ObjectNotFound:
        return []
    except PrefectHTTPStatusError as exc:  # "Block type not found": no Region block was ever saved here
        if exc.response.status_code == 404:
            return []
        raise
    return [(doc.data.get("name") or doc.name or "?", dict(doc.data)) for doc in documents]


class RegionalTaskRunner(ClusterTaskRunner):
    """The flows' DaskTaskRunner, the one way a flow reaches the multi-region cluster: pointed at it from inside
    the run.

    A deployed flow's task runner is fixed when the flow is defined, but its cluster is a parameter (a block name
    or a scheduler address). This runner starts unattached; :func:`run_on_cluster` (or
    :func:`run_regions_on_cluster`) attaches it once the parameters are checked, and its client connects on the
    first use. Per-region Prefect tasks submitted inside ``proximate.pool(region)`` then run on that region's
    workers (a requirement of 0 restricts placement without consuming a slot).

    Only prefect-dask's public surface is used: ``address`` and ``client_kwargs`` are set before the first use
    of ``client``; a local cluster the run starts is held in this runner's own exit stack, closed after
    prefect-dask has closed its client.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: What the run started for this runner (a local cluster), closed when the runner exits.
        self.held_open = contextlib.ExitStack()

    def duplicate(self) -> RegionalTaskRunner:
        return type(self)(client_kwargs=self.client_kwargs)

    def attach(
        self, address: str | contextlib.AbstractContextManager[str], client_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        """Point this runner at a scheduler (before its first use).

        Args:
            address: The scheduler's address, or a context manager yielding it (a local cluster), held open until
                the runner closes, after its client.
            client_kwargs: For ``distributed.Client`` (``security=`` for TLS).

        Raises:
            RuntimeError: it is attached already.
        """
        if self.address is not None:
            raise RuntimeError("this task runner is already attached to a cluster")
        if not isinstance(address, str):
            address = self.held_open.enter_context(address)
        self.address = address
        self.client_kwargs = {**self.client_kwargs, **(client_kwargs or {})}

    @property
    def client(self) -> PrefectDaskClient:
        # Unlike DaskTaskRunner's, never a fresh LocalCluster: only the cluster the run was given.
        if not self.address:
            raise RuntimeError("RegionalTaskRunner used before the flow attached it to a cluster")
        from distributed.comm import resolve_address

        client = super().client  # ClusterTaskRunner: also a scheduler without a dashboard
        # prefect-dask prefers a default client found in the process over the address; refuse another cluster's.
        if resolve_address(client.scheduler.address) != resolve_address(self.address):
            raise RuntimeError(
                f"the flow's task runner connected to {client.scheduler.address}, not its cluster {self.address}:"
                " a default Dask client of another cluster is set in this process (set_as_default=False avoids it)"
            )
        return client

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)  # prefect-dask closes its client first
        finally:
            self.held_open.close()


def _current_runner() -> DaskTaskRunner:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx else None
    if not isinstance(runner, DaskTaskRunner):
        raise RuntimeError(
            f"this flow needs a DaskTaskRunner (it has {type(runner).__name__}): keep its RegionalTaskRunner or"
            " pass DaskTaskRunner(address=...) with .with_options(task_runner=...)"
        )
    return runner


def run_on_cluster(block: RegionalCluster, references: Mapping[str, Iterable[RegionPath]]) -> Any:
    """Attach the running flow's task runner to ``block``'s cluster; return its Dask client, having checked that
    every region the run needs has live workers.

    Args:
        block: From :func:`cluster_block`. A 'local' block starts its cluster now, for the rest of the run.
        references: The located datasets of each parameter, for the regions they need and for errors.

    Raises:
        ParameterError: naming the parameter whose dataset is in a region the cluster does not have or that has
            no live worker, or ``cluster`` for a 'local' block that does not serve a region.
    """
    client = _attached_client(block, sorted({w.region for ws in references.values() for w in ws}))
    _require_live_regions(client, references)
    return client


def run_regions_on_cluster(block: RegionalCluster, parameter: str, regions: Sequence[str]) -> Any:
    """:func:`run_on_cluster` for flows given regions rather than datasets (the sync, the nightly run).

    Raises:
        ParameterError: naming ``parameter`` for a region the cluster does not have or that has no live worker,
            or ``cluster`` for a 'local' block that does not serve it.
    """
    from proximate.client import cluster_regions

    client = _attached_client(block, regions)
    info = cluster_regions(client)
    for region in regions:
        _require_live_region(info, parameter, region, "region")
    return client


def _attached_client(block: RegionalCluster, regions: Sequence[str]) -> Any:
    runner = _current_runner()
    if isinstance(runner, RegionalTaskRunner) and runner.address is None:
        tls = block.tls()
        client_kwargs = {"security": tls.security()} if tls else {}
        if block.address == LOCAL:
            runner.attach(_local_cluster(block, regions), client_kwargs)
        else:
            runner.attach(block.address, client_kwargs)
    return runner.client


def _region_blocks(block: RegionalCluster, regions: Sequence[str]) -> list[Region]:
    """The Region blocks a 'local' cluster block serves: its own list, else those of the run's regions; it must
    serve every region the run needs."""
    region_blocks = [Region.load(n) for n in (block.regions or regions)]
    missing = set(regions) - {r.name for r in region_blocks}
    if missing:
        raise ParameterError("cluster", f"the local cluster block does not serve region(s) {sorted(missing)}")
    return region_blocks


@contextlib.contextmanager
def _local_cluster(block: RegionalCluster, regions: Sequence[str]) -> Iterator[str]:
    with block.task_runner(_region_blocks(block, regions)) as runner:
        yield runner.address


def _require_live_regions(client: Any, references: Mapping[str, Iterable[RegionPath]]) -> None:
    from proximate.client import cluster_regions

    info = cluster_regions(client)
    for parameter, wheres in references.items():
        for where in wheres:
            _require_live_region(info, parameter, where.region, f"{where} is in region")


def _require_live_region(info: Mapping[str, Any], parameter: str, region: str, subject: str) -> None:
    """Refuse ``region`` unless the cluster (``cluster_regions``' answer) has it with live workers.

    Raises:
        ParameterError: naming ``parameter``; the message starts with ``subject`` and the region.
    """
    if region not in info["known"]:
        raise ParameterError(
            parameter,
            f"{subject} {region!r}, which this cluster does not have (regions: {', '.join(info['known']) or 'none'})",
        )
    if not info["live"].get(region):
        raise ParameterError(parameter, f"{subject} {region!r}, which has no live workers right now")


def reference_error(parameter: str, exc: DatasetRefError) -> ParameterError:
    """A catalog lookup's failure, naming the parameter whose reference it was."""
    return ParameterError(parameter, str(exc))


# -- egress plans: the analysis and table flows' max_egress_gb and dry_run -------------------------------------


def check_egress_parameter(max_egress_gb: float | None) -> None:
    """Refuse a ``max_egress_gb`` that is not a number of GB >= 0, before any work.

    Raises:
        ParameterError: naming ``max_egress_gb``.
    """
    if max_egress_gb is not None and not max_egress_gb >= 0:
        raise ParameterError("max_egress_gb", f"must be a number of GB >= 0, got {max_egress_gb!r}")


def apply_egress_plan(
    log: Any, key: str, predicted: EgressPlan, max_egress_gb: float | None, dry_run: bool
) -> EgressPlan:
    """Log a run's plan; refuse above ``max_egress_gb`` before anything is submitted; on a dry run publish the plan
    as the run's ``<key>-egress-plan`` artifact.

    Args:
        log: The run's logger.
        key: The flow's artifact key prefix (``compare``, ``describe-table``, ...).
        predicted: The plan.
        max_egress_gb: The flow's budget in decimal GB, or None.
        dry_run: Publish the plan (the caller then computes nothing).

    Returns:
        ``predicted``.

    Raises:
        EgressBudgetError: the plan predicts more than ``max_egress_gb``.
    """
    pairs = "; ".join(f"{s} -> {d} {n:,} B" for (s, d), n in sorted(predicted.bytes_between.items()) if s != d)
    log.info("predicted to cross regions: %s B (%s)", f"{predicted.cross_region_bytes:,}", pairs or "nothing")
    if max_egress_gb is not None:
        check_budget(predicted, int(max_egress_gb * 1e9))
    if dry_run:
        publish_plan(key, predicted)
        log.info("dry run: nothing computed")
    return predicted


def publish_plan(key: str, predicted: EgressPlan, report: LocalityReport | None = None) -> None:
    """The ``<key>-egress-plan`` artifact: the plan, with what was measured beside it when ``report`` is given."""
    create_markdown_artifact(
        key=f"{key}-egress-plan",
        markdown=plan_markdown(predicted, report),
        description="Bytes predicted to cross regions before the run" + (", beside those measured" if report else ""),
    )
