"""A real OpenSearch node for the tests, the benchmarks and local trials: ``python -m proximate.testing.opensearch``.

The jars come from Maven Central (cached in Maven's local repository), the node's main class is compiled once and
cached under ``~/.cache/proximate/opensearch``; see ``build`` and ``node``.
"""

from proximate.testing.opensearch.build import NodeBuildError, build_node, opensearch_version
from proximate.testing.opensearch.node import NodeStartError, OpenSearchNode, opensearch_node

__all__ = [
    "NodeBuildError",
    "NodeStartError",
    "OpenSearchNode",
    "build_node",
    "opensearch_node",
    "opensearch_version",
]
