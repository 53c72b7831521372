"""The catalog's error, in a module of its own so the pure query layer can raise it without importing a backend."""

from __future__ import annotations

from proximate.errors import ProximateError


class CatalogError(ProximateError, RuntimeError):
    """The catalog cannot be used (unreachable server, unreadable database, a query past a limit...); the message
    names it."""
