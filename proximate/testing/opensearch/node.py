"""A real single-node OpenSearch on 127.0.0.1, as its own JVM process, started and stopped by PID.

The node's home (its logs, its temporary files and, unless a data directory is given, its indices) is a fresh
temporary directory that ``close`` removes, so a node leaves nothing behind but what was asked to be kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from proximate import processes
from proximate.testing.opensearch.build import NodeBuild, build_node

#: A modest heap: the node shares two cores and the memory with the tests, the cluster and other users.
DEFAULT_HEAP = "512m"
#: The first start on a loaded two-core machine took about a minute (JIT warm-up of a cold JVM).
DEFAULT_STARTUP_TIMEOUT = 300.0


class NodeStartError(RuntimeError):
    """The node exited or did not answer in time; the message carries the end of its log."""


class OpenSearchNode:
    """One OpenSearch node process. ``start`` it (or use it as a context manager), ``stop`` or ``kill`` it and
    ``start`` it again on the same port and data; ``close`` stops it and removes its home.

    Args:
        port: The HTTP port; 0 lets the node choose a free one (then kept across restarts).
        data: A directory to keep the indices in (created if missing, never removed); ``None`` keeps them in
            the temporary home.
        heap: The JVM's maximum heap (``-Xmx``), e.g. ``"512m"``.
        startup_timeout: Seconds to wait for the cluster to answer green or yellow.

    Examples:
        >>> with OpenSearchNode() as node:  # doctest: +SKIP
        ...     opensearchpy.OpenSearch(node.url).info()["version"]["distribution"]
        'opensearch'
    """

    def __init__(
        self,
        port: int = 0,
        data: str | os.PathLike[str] | None = None,
        *,
        heap: str = DEFAULT_HEAP,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        self.port = port
        self.data = Path(data).resolve() if data is not None else None
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.home: Path | None = None
        self.process: processes.Supervised | None = None
        self._build: NodeBuild | None = None

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running node."""
        if not self.port:
            raise RuntimeError("the OpenSearch node has not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self.process.pid if self.process is not None and self.process.running() else None

    @property
    def log_path(self) -> Path:
        """The node's own log (the JVM's stdout and stderr), inside its home."""
        if self.home is None:
            raise RuntimeError("the OpenSearch node has not started")
        return self.home / "node.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, RuntimeError):
            return "(no log)"

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start the JVM and wait until the cluster answers green or yellow.

        Returns:
            The node's URL.

        Raises:
            NodeBuildError: Maven or javac failed (first start on a machine only).
            NodeStartError: The JVM exited, or the cluster did not answer within ``startup_timeout``.
        """
        if self.pid is not None:
            return self.url
        self._build = self._build or build_node()
        if self.home is None:
            self.home = Path(tempfile.mkdtemp(prefix="proximate-opensearch-"))
            for sub in ("modules", "plugins", "logs", "tmp"):  # the node scans the first two, logs to the third
                (self.home / sub).mkdir()
        data = self.data or self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        ports_file = self.home / "logs" / "http.ports"
        ports_file.unlink(missing_ok=True)
        settings = {
            "cluster.name": "proximate-local",
            "node.name": "proximate-node",
            "path.home": self.home,
            "path.data": data,
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": 0,
            # The node writes the ports it bound to logs/http.ports: port 0 then needs no guess and no race.
            "node.portsfile": "true",
            # A nearly full disk would otherwise turn every index read-only mid-test.
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "logger.level": "WARN",
        }
        jvm_options = (
            f"-Djava.io.tmpdir={self.home / 'tmp'}",
            f"-XX:ErrorFile={self.home / 'hs_err_pid%p.log'}",
            "-XX:-UsePerfData",  # no /tmp/hsperfdata_* left behind
            "-Dlog4j2.disable.jmx=true",
            "-Djava.awt.headless=true",
        )
        cmd = self._build.java_command(self.heap, jvm_options) + [f"{k}={v}" for k, v in settings.items()]
        self.process = processes.start(cmd, name="opensearch", log=self.log_path, cwd=self.home)
        try:
            self.process.wait_ready(
                lambda: self._ready(ports_file),
                what=f"the OpenSearch node (log {self.log_path})",
                timeout=self.startup_timeout,
                interval=0.5,
                error=NodeStartError,
            )
        except BaseException:
            self.stop()
            raise
        return self.url

    def _ready(self, ports_file: Path) -> bool:
        """Whether the node has bound its port (learnt from its ports file) and answers green or yellow."""
        if not ports_file.is_file():
            return False
        if not self.port:
            self.port = int(ports_file.read_text().split()[0].rsplit(":", 1)[1])
        return self.cluster_status() in ("green", "yellow")

    def cluster_status(self) -> str | None:
        """The cluster's health (``green``/``yellow``/``red``), or ``None`` if the node does not answer."""
        url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=2s"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)["status"]
        except urllib.error.HTTPError as exc:  # 408: not yellow yet
            with contextlib.suppress(ValueError, KeyError):
                return json.loads(exc.read())["status"]
            return None
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the node closes its indices cleanly), then SIGKILL after ``timeout`` seconds."""
        if self.process is None:
            return
        self.process.stop(((signal.SIGTERM, timeout),))

    def kill(self) -> None:
        """SIGKILL: the node dies as in a crash (its data directory stays, to ``start`` again from)."""
        if self.process is None:
            return
        self.process.kill(reap_timeout=None)

    def close(self) -> None:
        """Stop the node and remove its home (not a ``data`` directory given to it)."""
        self.stop()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> OpenSearchNode:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def opensearch_node(
    port: int = 0, data: str | os.PathLike[str] | None = None, *, heap: str = DEFAULT_HEAP
) -> Iterator[OpenSearchNode]:
    """A running node for the length of the block.

    Args:
        port: The HTTP port (0: a free one).
        data: A directory to keep the indices in; ``None``: nothing is kept.
        heap: The JVM's maximum heap.

    Yields:
        The started node (``node.url``, ``node.pid``).

    Examples:
        >>> with opensearch_node() as node:  # doctest: +SKIP
        ...     print(node.url)
        http://127.0.0.1:41234
    """
    with OpenSearchNode(port, data, heap=heap) as node:
        yield node
