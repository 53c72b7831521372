"""The testbed's services: the throwaway CA (``tls://`` everywhere), and in each region an S3 server (moto) bound
to the region's own loopback, holding the region's bucket, plus optionally a file server on the region's
address (the centralised baseline's remote reads)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from proximate.cluster import TLSFiles
from proximate.testing.testbed import netns
from proximate.testing.testbed.network import Network
from proximate.testing.testbed.roster import Roster

S3_PORT = 9000
FILES_PORT = 8080


def bucket_name(region: str) -> str:
    """The S3 bucket holding a region's objects, on that region's own S3 server."""
    return f"proximate-{region}"


def make_tls(directory: Path, hosts: Sequence[str]) -> TLSFiles:
    """A CA and one certificate for every host, in ``directory``."""
    from proximate.testing.testbed.tls import make_tls_files  # cryptography only when TLS is on

    return make_tls_files(directory, hosts=hosts)


def s3_endpoint(region: str) -> str:
    """The region's S3 endpoint, as processes inside that region see it."""
    return f"http://127.0.0.1:{S3_PORT}"


class Services:
    """The S3 and file servers of each region.

    Args:
        network: The testbed's network.
        roster: The record the servers' processes go into.
        root: The data root of a region.
        env: The environment of a testbed process (credentials of the S3 servers included).
    """

    def __init__(
        self, network: Network, roster: Roster, root: Callable[[str], Path], env: Callable[[], dict[str, str]]
    ) -> None:
        self.network = network
        self.roster = roster
        self.root = root
        self.env = env

    def start_s3(self, region: str) -> None:
        """The region's S3 server, listening, with the region's bucket created."""
        name = f"s3-{region}"
        exe = Path(sys.executable).with_name("moto_server")
        # 127.0.0.1 inside the region's namespace: nothing outside the region can reach it.
        self.roster.spawn(name, region, [str(exe), "-H", "127.0.0.1", "-p", str(S3_PORT)], self.env(), "s3")
        self.roster.wait_port(name, region, "127.0.0.1", S3_PORT)
        netns.in_namespace(self.network.namespace(region), self._create_bucket, region)

    def _create_bucket(self, region: str) -> None:
        self.s3_client(region).create_bucket(Bucket=bucket_name(region))

    def s3_client(self, region: str) -> Any:
        """A boto3 S3 client of the region's server; use it inside the region (``netns.in_namespace``)."""
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=s3_endpoint(region),
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def put_object(self, region: str, key: str, body: bytes | Path) -> None:
        """Put an object into the region's bucket, from inside the region."""

        def put() -> None:
            client = self.s3_client(region)
            if isinstance(body, Path):
                client.upload_file(str(body), bucket_name(region), key)
            else:
                client.put_object(Bucket=bucket_name(region), Key=key, Body=body)

        netns.in_namespace(self.network.namespace(region), put)

    def start_file_server(self, region: str) -> None:
        """Serve the region's root over HTTP with byte ranges on the region's address."""
        name = f"files-{region}"
        address = self.network.address(region)
        cmd = [sys.executable, "-m", "proximate.testing.testbed.fileserver", "--root", str(self.root(region))]
        cmd += ["--host", address, "--port", str(FILES_PORT), "--ranges-log", str(self.ranges_log(region))]
        self.roster.spawn(name, region, cmd, self.env(), "files")
        self.roster.wait_port(name, region, address, FILES_PORT)

    def ranges_log(self, region: str) -> Path:
        """Where the region's file server logs each range it served (``path start length`` per line)."""
        return self.root(region).parent / f"files-{region}.ranges"

    def file_url(self, region: str, path: str) -> str:
        """URL of a file under the region's root on its file server (reachable from linked namespaces)."""
        return f"http://{self.network.address(region)}:{FILES_PORT}/{path}"
