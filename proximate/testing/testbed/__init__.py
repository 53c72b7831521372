"""The multi-region testbed: regions as separate network namespaces joined by shaped links (Linux, root).

``proximate testbed up|down|status`` on the command line; :class:`Testbed` for tests and benches. See
:mod:`proximate.testing.testbed.bed` for the layout and :mod:`proximate.testing.testbed.agent` for how the
client side runs inside the client namespace.
"""

from proximate.testing.testbed.bed import (
    CLIENT,
    Testbed,
    TestbedError,
    bucket_name,
    connect,
    status,
    teardown,
)

__all__ = ["CLIENT", "Testbed", "TestbedError", "bucket_name", "connect", "status", "teardown"]
