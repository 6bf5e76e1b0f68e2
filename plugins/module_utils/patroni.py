"""The logic behind the filters of roles/patroni: the HA topology check and the cluster
settings to change. Pure functions, unit-tested in tests/unit/test_patroni_filters.py;
plugins/filter/patroni.py names them for Jinja.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def patroni_topology_errors(
    mode: str,
    db_hosts: Sequence[str],
    etcd_members: Sequence[str],
    *,
    synchronous_mode: bool = False,
    synchronous_node_count: int = 1,
    replica_of: Mapping[str, str] | None = None,
    db_group: str = "db",
    etcd_group: str = "etcd",
) -> list[str]:
    """Return one line per rule the inventory breaks for `postgresql_ha: <mode>` (empty: fine)."""
    if mode not in ("none", "patroni"):
        return [f"postgresql_ha: expected none or patroni, got {mode!r}"]
    if mode == "none":
        return []
    errors: list[str] = []
    members = list(etcd_members)
    if len(members) < 3 or len(members) % 2 == 0:
        errors.append(
            f"{etcd_group}: expected an odd number of etcd members, 3 or more, for postgresql_ha: patroni "
            f"(an even number adds no fault tolerance), got {len(members)} ({', '.join(members) or 'none'})"
        )
    hosts = list(db_hosts)
    if len(hosts) < 2:
        errors.append(
            f"postgresql_ha: patroni needs at least two hosts in group {db_group} (a primary and a replica), "
            f"got {len(hosts)} ({', '.join(hosts) or 'none'})"
        )
    elif synchronous_mode and synchronous_node_count > len(hosts) - 1:
        errors.append(
            "patroni_synchronous_mode: a synchronous mode with patroni_synchronous_node_count "
            f"{synchronous_node_count} needs that many replicas besides the primary, "
            f"group {db_group} has {len(hosts) - 1}"
        )
    for host, primary in sorted((replica_of or {}).items()):
        if primary:
            errors.append(
                f"postgresql_replica_of of {host}: expected empty with postgresql_ha: patroni "
                f"(Patroni chooses the primary), got {primary!r}"
            )
    return errors


def patroni_config_drift(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Return the part of `desired` that differs from Patroni's dynamic configuration `current`
    (GET /config), as a body for PATCH /config; nested mappings are compared key by key and
    values as strings, since Patroni keeps some of them as text ('on', '256MB')."""
    drift: dict[str, Any] = {}
    for key, value in desired.items():
        have = current.get(key)
        if isinstance(value, Mapping):
            nested = patroni_config_drift(have if isinstance(have, Mapping) else {}, value)
            if nested:
                drift[key] = nested
        elif _text(have) != _text(value):
            drift[key] = value
    return drift


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).lower() if value is not None else ""
