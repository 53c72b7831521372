"""The kernel's TCP counters behind the locality report's control bytes, on real sockets."""

from __future__ import annotations

import socket
import sys

import pytest

from proximate.comm_bytes import HEADER_BYTES, bytes_by_region, scheduler_counters, tcp_counters

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO and /proc are Linux's")


def _inode(sock: socket.socket) -> int:
    import os

    return int(os.readlink(f"/proc/self/fd/{sock.fileno()}")[len("socket:[") : -1])


def test_counters_see_what_a_connection_sent_and_received_and_the_delta_per_region():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"x" * 1000)
            assert len(peer.recv(1000, socket.MSG_WAITALL)) == 1000
            before = {"hosts": {"127.0.0.1": "a"}, "sockets": tcp_counters()}
            client.sendall(b"y" * 50_000)
            got = 0
            while got < 50_000:
                got += len(peer.recv(65536))
            peer.sendall(b"z" * 300)
            assert len(client.recv(300, socket.MSG_WAITALL)) == 300
            after = {"hosts": {"127.0.0.1": "a"}, "sockets": tcp_counters()}
            counted = after["sockets"][_inode(client)]
        assert counted[0] == "127.0.0.1"
        assert counted[1] >= 51_000 and counted[2] >= 300  # sent, received: payload, as the kernel counted it
        assert counted[3] >= 1 and counted[4] >= 1  # segments out and in
        # both ends are this process's sockets to 127.0.0.1: each byte counts once sent and once received
        delta = bytes_by_region(before, after)["a"]
        assert delta["payload"] == 2 * (50_000 + 300)
        assert delta["wire"] == delta["payload"] + delta["segments"] * HEADER_BYTES


def test_a_host_with_workers_of_two_regions_is_left_out(client):
    # the session cluster runs both regions' workers on 127.0.0.1: that host's traffic cannot be split by region
    assert client.run_on_scheduler(scheduler_counters)["hosts"] == {}
