"""The testbed's network: one namespace per node (the client region and each region), a shaped veth link between
every pair, one address per node reachable only over its direct links (see :mod:`proximate.testing.testbed.bed`).

No processes here: :class:`Network` names, builds, cuts, restores, re-shapes and counts; the namespaces are
deleted by ``teardown`` (which first stops what runs inside them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from proximate.testing.testbed import netns
from proximate.testing.testbed.netns import LinkEnd, NetnsError

CLIENT = "client"
#: A testbed name prefixes every namespace and device: no dashes (they separate the node), and short, since
#: a device name is ``<name>-<i><j>`` and Linux allows 15 characters.
NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
#: Every namespace's address is 10.77.255.<node + 1>; addresses exist only inside the testbed's namespaces.
_ADDRESS = "10.77.255.{}"
MAX_REGIONS = 9


@dataclass(frozen=True)
class Link:
    """A veth link between two nodes (``client`` or a region), shaped at ``rate`` both ways."""

    a: str
    b: str
    end_a: LinkEnd
    end_b: LinkEnd
    rate: str

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def end_of(self, node: str) -> LinkEnd:
        return self.end_a if node == self.a else self.end_b


class Network:
    """The namespaces and links of testbed ``name`` over ``nodes`` (``client`` first), each link at ``rate``.

    Args:
        name: The testbed's name (prefix of every namespace and device).
        nodes: ``client`` and the regions.
        rate: tc rate of every link, both directions.

    Raises:
        NetnsError: a malformed rate (before anything exists).
    """

    def __init__(self, name: str, nodes: Sequence[str], rate: str) -> None:
        netns.rate_bits(rate)  # a malformed rate fails before anything exists
        self.name = name
        self.nodes = list(nodes)
        self.rate = rate
        self.links = [
            Link(a, b, self._end(a, b), self._end(b, a), rate)
            for i, a in enumerate(self.nodes)
            for b in self.nodes[i + 1 :]
        ]

    def namespace(self, node: str) -> str:
        """The namespace of ``node`` (``client`` or a region)."""
        return f"{self.name}-{node}"

    def address(self, node: str) -> str:
        """The one address of ``node``, reachable over its direct links."""
        return _ADDRESS.format(self.nodes.index(node) + 1)

    def _end(self, node: str, peer: str) -> LinkEnd:
        device = f"{self.name}-{self.nodes.index(node)}{self.nodes.index(peer)}"
        return LinkEnd(self.namespace(node), device, self.address(node))

    def clashes(self) -> list[str]:
        """Namespaces of this testbed that exist already (it is up, or was left behind)."""
        return sorted(set(netns.list_namespaces()) & {self.namespace(n) for n in self.nodes})

    def build(self, created: Callable[[str], None]) -> None:
        """Create every namespace (calling ``created`` with each, so a crash leaves a record of it), its address,
        and every link.

        Raises:
            NetnsError: ``ip`` or ``tc`` refused (whatever exists is the caller's to delete).
        """
        for node in self.nodes:
            netns.add_namespace(self.namespace(node))
            created(self.namespace(node))
            netns.add_node_address(self.namespace(node), self.address(node))
        for link in self.links:
            netns.add_link(link.end_a, link.end_b, link.rate)

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if node in (link.a, link.b)]

    def link(self, a: str, b: str) -> Link:
        """The link between nodes ``a`` and ``b`` (either order).

        Raises:
            KeyError: no such link.
        """
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link
        raise KeyError(f"no link between {a!r} and {b!r}: nodes are {self.nodes}")

    def cut(self, region: str) -> None:
        """Take every link of ``region`` down (to the client and to each other region)."""
        for link in self.links_of(region):
            netns.link_down(link.end_of(region))

    def restore(self, region: str) -> None:
        """Bring the region's links back up, routes included."""
        for link in self.links_of(region):
            netns.link_up(link.end_a, link.end_b)

    def cut_link(self, a: str, b: str) -> None:
        """Take only the link between ``a`` and ``b`` down (at ``a``'s end)."""
        netns.link_down(self.link(a, b).end_of(a))

    def restore_link(self, a: str, b: str) -> None:
        """Bring the link between ``a`` and ``b`` back up, routes included."""
        link = self.link(a, b)
        netns.link_up(link.end_a, link.end_b)

    def set_rate(self, rate: str) -> None:
        """Re-shape every link, both directions, at ``rate``; on a refusal every link keeps its previous rate.

        Raises:
            NetnsError: tc refused the rate.
        """
        netns.rate_bits(rate)
        try:
            for link in self.links:
                for end in (link.end_a, link.end_b):
                    netns.shape(end, rate)
        except NetnsError:
            for link in self.links:
                for end in (link.end_a, link.end_b):
                    netns.shape(end, self.rate)
            raise
        self.rate = rate

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes each link has carried so far, per direction (see ``Testbed.link_bytes``)."""
        return links_bytes((link.name, link.a, link.b, link.end_a, link.end_b) for link in self.links)

    def region_link_bytes(self, delta: Mapping[str, Mapping[str, int]], region: str) -> int:
        """Bytes in a ``bytes_delta`` that crossed any link of ``region``, both directions."""
        return sum(delta[link.name]["total"] for link in self.links_of(region))

    def state(self) -> list[dict[str, Any]]:
        """The links as the state file records them (what :func:`links_bytes` reads back)."""
        return [{"name": link.name, "a": asdict(link.end_a), "b": asdict(link.end_b)} for link in self.links]


def bytes_delta(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]) -> dict:
    """Per link and direction, ``after - before``, plus ``total`` per link."""
    out: dict[str, dict[str, int]] = {}
    for link, dirs in after.items():
        out[link] = {d: n - before[link][d] for d, n in dirs.items()}
        out[link]["total"] = sum(out[link].values())
    return out


def links_bytes(links: Iterable[tuple[str, str, str, LinkEnd, LinkEnd]]) -> dict[str, dict[str, int]]:
    """Per link (name, node a, node b, end a, end b), the bytes each end has sent: one read per namespace."""
    links = list(links)
    devices: dict[str, list[str]] = {}
    for _, _, _, a, b in links:
        for end in (a, b):
            devices.setdefault(end.namespace, []).append(end.device)
    counts = {ns: netns.device_bytes(ns, devs) for ns, devs in devices.items()}
    return {
        name: {
            f"{node_a}->{node_b}": counts[a.namespace][a.device]["tx"],
            f"{node_b}->{node_a}": counts[b.namespace][b.device]["tx"],
        }
        for name, node_a, node_b, a, b in links
    }
