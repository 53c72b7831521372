"""Run Python functions inside the client namespace: the client side of tests and benches.

Why a process in the namespace, not a host veth into it: giving the host a leg into the client namespace
needs an address in the host's own namespace, which the testbed must not touch (other engineers' services live
there), and it would let the host route towards the regions. So the testbed starts this agent with
``ip netns exec <client namespace>``; the caller (pytest, a bench) hands it functions over pipes (pipes cross
network namespaces, sockets do not) and gets back their results or exceptions. Functions travel by
cloudpickle: module-level functions by reference (their module must be importable in the agent: the agent
gets the caller's ``PYTHONPATH``), others by value.

The agent's standard output is the reply channel, so whatever the functions print goes to its stderr.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from proximate import processes
from proximate.errors import ProximateError

_HEADER = struct.Struct("!Q")


class AgentError(ProximateError, RuntimeError):
    """The agent died or did not answer within the timeout (it is killed then: nothing is left hanging)."""


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _write_message(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Agent:
    """A Python process inside a namespace that runs the functions it is given, one at a time.

    Args:
        namespace: The network namespace to run in.
        env: Its whole environment (pass ``PYTHONPATH`` so it imports the caller's code).
        stderr: Where its output goes (a file object), default the caller's stderr.
    """

    def __init__(self, namespace: str, env: Mapping[str, str], stderr: Any = None) -> None:
        self.namespace = namespace
        self.process = processes.start(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "proximate.testing.testbed.agent"],
            name=f"agent in {namespace}",
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        self.proc: subprocess.Popen[bytes] = self.process.popen  # type: ignore[assignment]  # its pipes

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 600.0, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the agent and return its result.

        Args:
            fn: The function.
            *args: Its positional arguments (picklable).
            timeout: Seconds to wait for the answer; the agent is killed after that (``None``: forever).
            **kwargs: Its keyword arguments.

        Returns:
            What ``fn`` returned.

        Raises:
            Exception: whatever ``fn`` raised, re-raised here, with the agent's traceback as a note.
            AgentError: the agent died or timed out.
        """
        import cloudpickle

        if self.proc.poll() is not None:
            raise AgentError(f"the agent in {self.namespace!r} has exited with code {self.proc.returncode}")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _write_message(self.proc.stdin.fileno(), cloudpickle.dumps((fn, args, kwargs)))
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        try:
            (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
            ok, value, text = cloudpickle.loads(_read_exactly(fd, size, deadline))
        except TimeoutError:
            self.close()
            raise AgentError(
                f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s in "
                f"{self.namespace!r}; the agent was killed"
            ) from None
        except EOFError:
            code = self.proc.wait(timeout=10)
            raise AgentError(f"the agent in {self.namespace!r} died (exit code {code})") from None
        if ok:
            return value
        value.add_note(f"(raised in the agent in {self.namespace!r})\n{text}")
        raise value

    def close(self) -> None:
        """Stop the agent (its process group, by PID) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
        # It exits at EOF on its stdin: 15 s for that, then SIGKILL to its group.
        processes.stop([self.process], [(None, 15.0)])
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(argv: Sequence[str] | None = None) -> int:
    """The agent's loop: read a call from stdin, run it, write ``(ok, value, traceback text)`` to stdout."""
    import cloudpickle

    reply = os.dup(1)  # the protocol owns the real stdout; prints go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        try:
            (size,) = _HEADER.unpack(_read_exactly(0, _HEADER.size, None))
            fn, args, kwargs = cloudpickle.loads(_read_exactly(0, size, None))
        except EOFError:
            return 0
        try:
            result = (True, fn(*args, **kwargs), "")
        except BaseException as exc:  # the caller decides; the agent keeps serving
            result = (False, exc, traceback.format_exc())
        try:
            payload = cloudpickle.dumps(result)
        except Exception as exc:  # an unpicklable result or exception: say so instead of dying
            payload = cloudpickle.dumps((False, AgentError(f"unpicklable result: {exc!r}"), traceback.format_exc()))
        _write_message(reply, payload)


if __name__ == "__main__":
    sys.exit(serve())
