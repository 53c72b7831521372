"""proximate's settings, in one place: the ``proximate.*`` namespace of Dask's config.

The defaults are in ``proximate/proximate.yaml`` and every key is described in ``proximate/proximate-schema.yaml``
(as distributed keeps ``distributed.yaml`` and its schema); importing this module adds them to Dask's defaults
(``dask.config.update_defaults``). A key is set, from weakest to strongest:

1. the default in ``proximate.yaml``;
2. a Dask YAML file (``~/.config/dask/proximate.yaml``, ``DASK_CONFIG``) or ``DASK_PROXIMATE__SECTION__KEY=value``
   (Dask reads these itself), or ``dask.config.set({"proximate.section.key": value})``;
3. its ``PROXIMATE_*`` environment variable (:data:`LEGACY_ENV`), read at each call, so that the variables
   operators and deployments already set keep working and keep winning.

Every read of a proximate setting goes through :func:`get` (or a typed helper): no other module reads
``os.environ`` for one. A module that hands a setting to a child process by environment (a worker's region and
root for its sandbox children, the scheduler's regions) writes the variable :func:`env_var` names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml

from proximate.errors import ProximateInputError

#: The defaults file and its schema, shipped in the package.
DEFAULTS_FILE = Path(__file__).with_name("proximate.yaml")
SCHEMA_FILE = Path(__file__).with_name("proximate-schema.yaml")

with DEFAULTS_FILE.open() as _f:
    #: The packaged defaults, as loaded (``{"proximate": {...}}``).
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(DEFAULTS)

#: The environment variables that set a key (without the ``proximate.`` prefix), the one table of them. They
#: predate the config namespace; each still works and wins over every other source.
LEGACY_ENV: dict[str, str] = {
    "PROXIMATE_HOME": "home",
    "PROXIMATE_RESULTS": "results",
    "PROXIMATE_OUTPUT_ROOTS": "output-roots",
    "PROXIMATE_CATALOG": "catalog.location",
    "PROXIMATE_CATALOG_USERNAME": "catalog.username",
    "PROXIMATE_CATALOG_PASSWORD": "catalog.password",
    "PROXIMATE_CATALOG_PASSWORD_FILE": "catalog.password-file",
    "PROXIMATE_EXTRACT_TIMEOUT": "catalog.extract.timeout",
    "PROXIMATE_EXTRACT_MEMORY_MB": "catalog.extract.memory-mb",
    "PROXIMATE_PARTIAL_CPU_SECONDS": "tables.partial.cpu-seconds",
    "PROXIMATE_PARTIAL_MEMORY_MB": "tables.partial.memory-mb",
    "PROXIMATE_PARTIAL_WALL_SECONDS": "tables.partial.wall-seconds",
    "PROXIMATE_BROADCAST_BELOW_BYTES": "tables.broadcast-below-bytes",
    "PROXIMATE_REGIONS": "scheduler.regions",
    "PROXIMATE_NO_WORKERS_TIMEOUT": "scheduler.no-workers-timeout",
    "PROXIMATE_PROPAGATE": "scheduler.propagate",
    "PROXIMATE_LINK_TIMEOUT": "scheduler.link-timeout",
    "PROXIMATE_HEARTBEAT_INTERVAL": "scheduler.heartbeat-interval",
    "PROXIMATE_REGION": "worker.region",
    "PROXIMATE_ROOT": "worker.root",
    "PROXIMATE_SYNC_DIRECT": "sync.direct",
    "PROXIMATE_TESTBED_STATE": "testbed.state",
}
_ENV_OF_KEY = {key: var for var, key in LEGACY_ENV.items()}
#: Words that turn a yes/no setting off, given as text (any case).
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(ProximateInputError):
    """A setting whose value is not of its kind (a number that is not one, a negative limit), or an unknown key."""


def env_var(key: str) -> str:
    """The ``PROXIMATE_*`` variable that sets ``key``.

    Args:
        key: A key of the namespace without its ``proximate.`` prefix, e.g. ``"worker.region"``.

    Returns:
        The variable's name.

    Raises:
        ConfigError: no variable sets ``key``.

    Examples:
        >>> env_var("worker.region")
        'PROXIMATE_REGION'
    """
    try:
        return _ENV_OF_KEY[key]
    except KeyError:
        raise ConfigError(f"no PROXIMATE_* variable sets proximate.{key}") from None


def default(key: str) -> Any:
    """The packaged default of ``key`` (``proximate.yaml``), whatever is configured.

    Args:
        key: A key without its ``proximate.`` prefix.

    Returns:
        The default.

    Raises:
        ConfigError: ``key`` is not in ``proximate.yaml``.

    Examples:
        >>> default("scheduler.link-timeout")
        60.0
    """
    node: Any = DEFAULTS["proximate"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"proximate.{key} is not a setting (see {SCHEMA_FILE.name})")
        node = node[part]
    return node


def source(key: str, environ: Mapping[str, str] | None = None) -> str:
    """What set ``key``, for messages: its variable when the environment sets it, else ``proximate.<key>``.

    Args:
        key: A key without its ``proximate.`` prefix.
        environ: The environment (``os.environ`` when omitted).

    Returns:
        The name an operator would change.

    Examples:
        >>> source("sync.direct", {"PROXIMATE_SYNC_DIRECT": "0"}), source("sync.direct", {})
        ('PROXIMATE_SYNC_DIRECT', 'proximate.sync.direct')
    """
    var = _ENV_OF_KEY.get(key)
    env = os.environ if environ is None else environ
    return var if var is not None and env.get(var, "") != "" else f"proximate.{key}"


def get(key: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of ``key``: its ``PROXIMATE_*`` variable when set (not empty), else Dask's config.

    Args:
        key: A key without its ``proximate.`` prefix, e.g. ``"catalog.location"``.
        environ: Where to read the variable; ``os.environ`` when omitted (read now, not at import, so a variable
            set later counts).

    Returns:
        The variable's text, or the configured value (of the YAML's type; None when unset).

    Raises:
        ConfigError: ``key`` is not a setting.

    Examples:
        >>> get("catalog.location", {"PROXIMATE_CATALOG": "cat.sqlite"})
        'cat.sqlite'
        >>> get("scheduler.no-workers-timeout", {})
        60.0
    """
    var = _ENV_OF_KEY.get(key)
    env = os.environ if environ is None else environ
    if var is not None and env.get(var, "") != "":
        return env[var]
    default(key)  # an unknown key is a bug: say so rather than return None
    return dask.config.get(f"proximate.{key}")


def get_str(key: str, environ: Mapping[str, str] | None = None) -> str | None:
    """:func:`get` as text; None when unset or empty.

    Examples:
        >>> get_str("worker.region", {"PROXIMATE_REGION": "eu-west-2"})
        'eu-west-2'
        >>> get_str("worker.region", {}) is None
        True
    """
    value = get(key, environ)
    return None if value is None or value == "" else str(value)


def get_float(key: str, environ: Mapping[str, str] | None = None, *, positive: bool = False) -> float | None:
    """:func:`get` as a number; None when unset or blank.

    Args:
        key: A key without its ``proximate.`` prefix.
        environ: The environment (``os.environ`` when omitted).
        positive: Refuse zero and negative numbers.

    Returns:
        The number, or None.

    Raises:
        ConfigError: naming the variable (or key) and its value, when it is not a (positive) number.

    Examples:
        >>> get_float("tables.partial.cpu-seconds", {"PROXIMATE_PARTIAL_CPU_SECONDS": "30"})
        30.0
        >>> get_float("tables.partial.cpu-seconds", {"PROXIMATE_PARTIAL_CPU_SECONDS": "lots"})
        Traceback (most recent call last):
        ...
        proximate.config.ConfigError: PROXIMATE_PARTIAL_CPU_SECONDS='lots' is not a number
    """
    value = get(key, environ)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source(key, environ)}={value!r} is not a number") from None
    if positive and not number > 0:
        raise ConfigError(f"{source(key, environ)}={value!r} must be positive")
    return number


def get_bool(key: str, environ: Mapping[str, str] | None = None) -> bool:
    """:func:`get` as yes or no: text is off when it is one of :data:`FALSE_WORDS`, on otherwise.

    Examples:
        >>> get_bool("sync.direct", {"PROXIMATE_SYNC_DIRECT": "0"}), get_bool("sync.direct", {})
        (False, True)
    """
    value = get(key, environ)
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_WORDS
    return bool(value)


def get_list(key: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """:func:`get` as a list of text: a YAML list as it is, text split at commas and newlines, blanks dropped.

    Examples:
        >>> get_list("scheduler.regions", {"PROXIMATE_REGIONS": "a,b,"})
        ['a', 'b']
    """
    value = get(key, environ)
    if value is None:
        return []
    items = value.replace("\n", ",").split(",") if isinstance(value, str) else value
    return [str(item).strip() for item in items if str(item).strip()]


def keys(tree: Mapping[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Every key of the namespace (the leaves of ``proximate.yaml``), dotted, without the ``proximate.`` prefix.

    Examples:
        >>> "catalog.location" in keys()
        True
    """
    tree = DEFAULTS["proximate"] if tree is None else tree
    found: list[str] = []
    for name, value in tree.items():
        if isinstance(value, dict):
            found += keys(value, f"{prefix}{name}.")
        else:
            found.append(f"{prefix}{name}")
    return found


def schema() -> dict[str, Any]:
    """The schema of the namespace (``proximate-schema.yaml``), loaded.

    Examples:
        >>> schema()["properties"]["proximate"]["type"]
        'object'
    """
    with SCHEMA_FILE.open() as f:
        return yaml.safe_load(f)


def settings_table() -> str:
    """The Markdown table of every setting (key, variable, default, meaning) that docs/configuration.md holds,
    made from the schema and the defaults (tests/test_config.py checks that the page has it as it is now).

    Returns:
        The table, one row per key, ending with a newline.

    Examples:
        >>> settings_table().splitlines()[0]
        '| key | variable | default | meaning |'
    """
    rows = ["| key | variable | default | meaning |", "| --- | --- | --- | --- |"]
    for key in keys():
        node: Any = schema()["properties"]["proximate"]
        for part in key.split("."):
            node = node["properties"][part]
        value = default(key)
        shown = "unset" if value is None else "none" if value == [] else f"`{str(value).replace('True', 'true')}`"
        meaning = " ".join(node["description"].split()).replace("|", "\\|")
        var = f"`{_ENV_OF_KEY[key]}`" if key in _ENV_OF_KEY else "none"
        rows.append(f"| `proximate.{key}` | {var} | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"
