"""``python -m proximate.testing.opensearch``: a real OpenSearch 2.19 node, its URL on a line of its own, stopped
by SIGTERM, nothing left behind but ``--data``, which a second node starts from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from opensearchpy import OpenSearch


def _launch(data, tmp, log) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proximate.testing.opensearch", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},  # the node's home goes here: it must be gone after the stop
    )
    url = proc.stdout.readline().strip()  # the first line, printed once the cluster is green or yellow
    return proc, url


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_launcher_runs_opensearch_2_19_until_sigterm_and_keeps_only_its_data(tmp_path):
    tmp, data = tmp_path / "tmp", tmp_path / "data"
    tmp.mkdir()
    with open(tmp_path / "launcher.log", "w") as log:
        proc, url = _launch(data, tmp, log)
        try:
            assert url.startswith("http://127.0.0.1:"), (tmp_path / "launcher.log").read_text()
            client = OpenSearch(hosts=[url])
            info = client.info()
            assert info["version"]["distribution"] == "opensearch"
            assert info["version"]["number"].startswith("2.19.")
            assert client.cluster.health()["status"] in ("green", "yellow")
            client.index(index="kept", id="1", body={"word": "persisted"}, refresh=True)
        finally:
            code = _stop(proc)
        assert code == 0
        assert list(tmp.iterdir()) == []  # the node's home (logs, temp files) is gone
        assert any(data.rglob("*"))  # the indices are kept where --data said

        proc, url = _launch(data, tmp, log)
        try:
            assert url.startswith("http://127.0.0.1:"), (tmp_path / "launcher.log").read_text()
            doc = OpenSearch(hosts=[url]).get(index="kept", id="1")
            assert doc["_source"] == {"word": "persisted"}
        finally:
            assert _stop(proc) == 0
        assert list(tmp.iterdir()) == []
