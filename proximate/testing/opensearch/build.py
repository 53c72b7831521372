"""The OpenSearch node's Java side, built once and cached: Maven resolves the jars named in ``pom.xml`` (its local
repository keeps them), ``javac`` compiles ``ProximateNode.java`` against them, and the class plus the classpath are
kept under ``~/.cache/proximate/opensearch/<version>-<digest>``. The digest covers both source files, so an edit to
either builds anew instead of starting a stale node."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
MAIN_SOURCE = HERE / "ProximateNode.java"
MAIN_CLASS = "ProximateNode"


class NodeBuildError(RuntimeError):
    """Maven or javac failed, or is missing, so no node can be started."""


def opensearch_version() -> str:
    """The OpenSearch version ``pom.xml`` pins.

    Returns:
        The version string, e.g. ``"2.19.6"``.

    Examples:
        >>> opensearch_version().startswith("2.19.")
        True
    """
    found = re.search(r"<opensearch.version>([^<]+)</opensearch.version>", POM.read_text())
    if found is None:  # only an edit of pom.xml can get here
        raise NodeBuildError(f"{POM} names no <opensearch.version>")
    return found.group(1)


@dataclass(frozen=True)
class NodeBuild:
    """A built node: where its class lives and the jars it runs with.

    Attributes:
        directory: The cache directory of this build.
        classpath: The compiled class's directory first, then every jar, in Maven's order.
    """

    directory: Path
    classpath: tuple[str, ...]

    def java_command(self, heap: str, jvm_options: tuple[str, ...] = ()) -> list[str]:
        """``java`` with this build's classpath and a fixed heap, up to (not including) the node's settings."""
        return ["java", f"-Xms{min(heap, '256m', key=_heap_bytes)}", f"-Xmx{heap}", *jvm_options,
                "-cp", os.pathsep.join(self.classpath), MAIN_CLASS]  # fmt: skip


def _heap_bytes(size: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if not re.fullmatch(r"\d+[kmg]", size.lower()):
        raise ValueError(f"a JVM heap size like 512m or 1g, got {size!r}")
    return int(size[:-1]) * units[size[-1].lower()]


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/proximate/opensearch`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "proximate" / "opensearch"


def _build_key() -> str:
    digest = hashlib.sha256(POM.read_bytes() + b"\0" + MAIN_SOURCE.read_bytes()).hexdigest()[:12]
    return f"{opensearch_version()}-{digest}"


def _run(what: str, cmd: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise NodeBuildError(f"{what}: {cmd[0]} is not installed (the node needs Java 17 and Maven)") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise NodeBuildError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")


def _load(directory: Path) -> NodeBuild | None:
    """The build in ``directory`` if it is complete and every jar it names is still in Maven's repository."""
    listing = directory / "classpath.txt"
    if not (directory / "classes" / f"{MAIN_CLASS}.class").is_file() or not listing.is_file():
        return None
    jars = [j for j in listing.read_text().strip().split(os.pathsep) if j]
    if not jars or not all(Path(j).is_file() for j in jars):  # ~/.m2 cleaned since: resolve again
        return None
    return NodeBuild(directory, (str(directory / "classes"), *jars))


def build_node() -> NodeBuild:
    """The cached build, or a new one (downloads the jars on the first call on a machine).

    Builds run under a lock file, so two processes starting a node at once build it once.

    Returns:
        The build to start a node from.

    Raises:
        NodeBuildError: Maven or javac is missing or failed (the message carries their last lines).

    Examples:
        >>> build = build_node()  # doctest: +SKIP
        >>> build.java_command("512m")[:3]  # doctest: +SKIP
        ['java', '-Xms256m', '-Xmx512m']
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    directory = root / _build_key()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _load(directory)
        if found is not None:
            return found
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            shutil.copy(POM, work / "pom.xml")
            shutil.copy(MAIN_SOURCE, work / MAIN_SOURCE.name)
            _run(
                "resolving the OpenSearch jars with Maven",
                ["mvn", "-B", "-q", "dependency:build-classpath", "-Dmdep.outputFile=classpath.txt"],
                work,
            )
            classpath = (work / "classpath.txt").read_text().strip()
            _run(
                "compiling the OpenSearch node's main class",
                ["javac", "-proc:none", "-cp", classpath, "-d", "classes", MAIN_SOURCE.name],
                work,
            )
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(directory)  # an incomplete earlier build (a jar gone from ~/.m2)
            work.rename(directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        found = _load(directory)
        if found is None:  # javac and Maven said yes but left nothing usable
            raise NodeBuildError(f"the OpenSearch node build in {directory} is incomplete")
        return found
