"""Errors as the ``proximate`` command shows them: an expected error (a ``ProximateError``: bad input, or a part
that failed and says which) is one line and its exit code; anything else is a bug, shown with its traceback,
never passed off as bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from proximate import cli
from proximate.errors import ProximateError, ProximateInputError

EXE = Path(sys.executable).with_name("proximate")


def _raise_region_error(argv):
    from proximate.regions import RegionError

    raise RegionError("region 'Bad_Name' is not a valid region name")


def _raise_cluster_error(argv):
    from proximate.cluster import ClusterError

    raise ClusterError("dask scheduler: scheduler exited with code 1 while starting")


def _raise_plain_value_error(argv):
    return int("not a number")  # a bug: a ValueError nobody meant as a message


def _raise_key_error(argv):
    return {}["missing"]


def _run(target: str, capsys) -> tuple[int, str]:
    entry = [EntryPoint("deploy-nightly", f"{__name__}:{target}", cli.COMMANDS_GROUP)]
    code = cli.main(["deploy-nightly"], entry_points=entry)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "code", "line"),
    [
        ("_raise_region_error", 2, "proximate: error: region 'Bad_Name' is not a valid region name\n"),
        ("_raise_cluster_error", 1, "proximate: error: dask scheduler: scheduler exited with code 1 while starting\n"),
    ],
)
def test_an_expected_error_is_one_line_with_its_exit_code(capsys, target, code, line):
    assert _run(target, capsys) == (code, line)


@pytest.mark.parametrize(
    ("target", "kind"), [("_raise_plain_value_error", "ValueError"), ("_raise_key_error", "KeyError")]
)
def test_a_bug_shows_its_traceback_and_exits_1_not_2(capsys, target, kind):
    code, err = _run(target, capsys)
    assert code == 1  # not 2: a ValueError from a bug is not bad input
    assert err.startswith("Traceback (most recent call last):")
    assert f"in {target}" in err and f"{kind}:" in err  # where it happened, and what
    assert err.rstrip().endswith(
        "proximate: internal error in 'deploy-nightly' (a bug; the traceback above says where)"
    )


def test_a_missing_sse_c_key_file_is_one_line_and_nothing_is_written(tmp_path):
    """Before, the missing file escaped as a FileNotFoundError traceback (exit 1)."""
    missing = tmp_path / "no-such.key"
    dest = tmp_path / "mirror"
    done = subprocess.run(
        [str(EXE), "sync", "--sse-c-key-file", str(missing), "s3://bucket/p/", str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"},  # never reached
    )
    assert done.returncode == 2
    assert done.stderr == f"proximate: error: --sse-c-key-file {missing}: No such file or directory\n"
    assert not dest.exists()


def test_a_key_file_that_is_not_a_key_is_one_line(tmp_path, capsys):
    key = tmp_path / "short.key"
    key.write_bytes(b"0123456789")
    dest = tmp_path / "mirror"
    assert cli.main(["sync", "--sse-c-key-file", str(key), "s3://bucket/p/", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err == f"proximate: error: --sse-c-key-file {key}: not a 256-bit key (32 bytes, raw or base64)\n"
    assert not dest.exists()


def test_every_error_class_is_a_proximate_error_and_keeps_its_builtin_base():
    from proximate.analysis import AnalysisInputError, ParameterError
    from proximate.catalog import CatalogError
    from proximate.cli import CommandUnavailableError
    from proximate.cluster import ClusterError
    from proximate.datasets import DatasetRefError
    from proximate.errors import RegionLinkError, RegionUnavailableError
    from proximate.formats import UnsupportedFormatError
    from proximate.processes import ProcessStartError
    from proximate.regions import RegionError, RegionPathError
    from proximate.sync.checksums import ChecksumError
    from proximate.sync.keys import HostileKeyError
    from proximate.sync.manifest import ManifestWriteError, SyncLockedError
    from proximate.sync.sources.base import ColdObjectError, SourceError
    from proximate.sync.sources.s3 import S3ReadError
    from proximate.tables import TableInputError
    from proximate.testing.testbed import TestbedError
    from proximate.testing.testbed.agent import AgentError
    from proximate.testing.testbed.netns import NetnsError

    builtin = {
        ValueError: (AnalysisInputError, ParameterError, CommandUnavailableError, DatasetRefError, RegionError,
                     RegionPathError, HostileKeyError, TableInputError, UnsupportedFormatError),
        RuntimeError: (CatalogError, ClusterError, RegionLinkError, RegionUnavailableError, ProcessStartError,
                       SyncLockedError, SourceError, TestbedError, AgentError, NetnsError),
        OSError: (ChecksumError, ManifestWriteError, ColdObjectError, S3ReadError),
    }  # fmt: skip
    for base, classes in builtin.items():
        for cls in classes:
            assert issubclass(cls, ProximateError) and issubclass(cls, base), cls
            assert cls.exit_code == (2 if base is ValueError else 1), cls
            assert issubclass(cls, ProximateInputError) == (base is ValueError), cls
