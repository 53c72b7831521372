"""The one record of a testbed's processes: each started inside a node's namespace through
:mod:`proximate.processes`, kept by name with its node and role, and written to the state file on every change
(so ``teardown`` finds them from another process, or after a crash)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from proximate import processes
from proximate.processes import Supervised
from proximate.testing.testbed import netns


class Roster:
    """The processes of one testbed, by name.

    Args:
        namespace: The namespace of a node (``Network.namespace``).
        workdir: The testbed's folder (logs under ``logs/``, the processes' working directory).
        parent_death: Processes get SIGTERM when the process that started them dies.
        startup_timeout: Seconds a server may take to listen.
        saved: Called after every change, to write the state file.
        error: The exception class of start-up failures (``TestbedError``).
    """

    def __init__(
        self,
        namespace: Callable[[str], str],
        workdir: Path,
        *,
        parent_death: bool,
        startup_timeout: float,
        saved: Callable[[], None],
        error: type[Exception],
    ) -> None:
        self.namespace = namespace
        self.workdir = workdir
        self.parent_death = parent_death
        self.startup_timeout = startup_timeout
        self.saved = saved
        self.error = error
        self.processes: dict[str, Supervised] = {}

    def spawn(self, name: str, node: str, cmd: Sequence[str], env: Mapping[str, str], role: str) -> Supervised:
        """Start ``cmd`` in ``node``'s namespace, record it (replacing a stopped process of that name) and save."""
        proc = processes.start(
            ["ip", "netns", "exec", self.namespace(node), *cmd],
            name=name,
            env=env,
            log=self.workdir / "logs" / f"{name}.log",
            cwd=self.workdir,
            parent_death=self.parent_death,
            info={"node": node, "role": role},
        )
        self.processes[name] = proc
        self.saved()
        return proc

    def records(self) -> dict[str, dict[str, Any]]:
        """What the state file keeps of each process (``Supervised.from_record`` reads it back)."""
        return {name: proc.record() for name, proc in self.processes.items()}

    def names(self, role: str | None = None, node: str | None = None) -> list[str]:
        """Names of the processes started (alive or not), of ``role`` and ``node`` when given."""
        return [
            n
            for n, p in self.processes.items()
            if (role is None or p.info["role"] == role) and (node is None or p.info["node"] == node)
        ]

    def log_tail(self, name: str, lines: int = 25) -> str:
        proc = self.processes.get(name)
        return proc.log_tail(lines) if proc is not None else ""

    def wait_port(self, name: str, node: str, host: str, port: int) -> None:
        """Until process ``name`` listens on ``host:port`` in ``node``'s namespace.

        Raises:
            error: it exited first, or did not listen within the start-up timeout (its log's tail included).
        """
        self.processes[name].wait_ready(
            lambda: netns.port_open(self.namespace(node), host, port),
            what=f"{name} on {host}:{port}",
            timeout=self.startup_timeout,
            error=self.error,
        )

    def wait(self, names: Iterable[str], probe: Callable[[], bool], *, what: str, timeout: float, **kw: Any) -> None:
        """Until ``probe()`` is true; fails at once if one of ``names`` exits (with its log's tail)."""
        watched = [self.processes[n] for n in names]
        processes.wait_ready(watched, probe, what=what, timeout=timeout, error=self.error, **kw)

    def reap(self, timeout: float = 5.0) -> None:
        """Collect the exit status of every process this one started (after ``teardown`` stopped them)."""
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            proc.reap(max(0.1, deadline - time.monotonic()))
