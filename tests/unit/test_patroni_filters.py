"""Unit tests of roles/patroni's pure filters: the HA topology check (one line per broken rule)
and the cluster-wide settings that differ from Patroni's (the body of PATCH /config)."""

from __future__ import annotations

import pytest
from ansible_collections.openpolicy.deploy.plugins.module_utils import patroni

DB = ["db1", "db2", "db3"]


def errors(**overrides) -> list[str]:
    args = {"mode": "patroni", "db_hosts": DB, "etcd_members": DB, **overrides}
    return patroni.patroni_topology_errors(**args)


def test_three_db_hosts_and_three_etcd_members_pass() -> None:
    assert errors() == []
    assert errors(synchronous_mode=True, synchronous_node_count=2) == []


def test_mode_none_checks_nothing() -> None:
    assert errors(mode="none", db_hosts=["db1"], etcd_members=[]) == []


def test_unknown_mode_is_named() -> None:
    assert errors(mode="stolon") == ["postgresql_ha: expected none or patroni, got 'stolon'"]


@pytest.mark.parametrize("members", [[], ["e1"], ["e1", "e2"], ["e1", "e2", "e3", "e4"]])
def test_an_even_number_or_fewer_than_three_etcd_members_is_refused(members: list[str]) -> None:
    (message,) = errors(etcd_members=members)
    assert message.startswith("etcd: expected an odd number of etcd members, 3 or more, for postgresql_ha: patroni")
    assert f"got {len(members)} (" in message and "\n" not in message


def test_one_db_host_is_refused() -> None:
    assert errors(db_hosts=["db1"]) == [
        "postgresql_ha: patroni needs at least two hosts in group db (a primary and a replica), got 1 (db1)"
    ]


def test_a_synchronous_mode_needs_its_replicas() -> None:
    assert errors(db_hosts=["db1", "db2"], synchronous_mode=True, synchronous_node_count=2) == [
        "patroni_synchronous_mode: a synchronous mode with patroni_synchronous_node_count 2 needs that many "
        "replicas besides the primary, group db has 1"
    ]
    assert errors(db_hosts=["db1", "db2"], synchronous_mode=False, synchronous_node_count=2) == []


def test_a_fixed_primary_is_refused_under_patroni() -> None:
    assert errors(replica_of={"db1": "", "db2": "db1"}) == [
        "postgresql_replica_of of db2: expected empty with postgresql_ha: patroni (Patroni chooses the primary), "
        "got 'db1'"
    ]


def test_group_names_appear_in_the_messages() -> None:
    (etcd, db) = errors(db_hosts=["x"], etcd_members=["a", "b"], db_group="pg", etcd_group="dcs")
    assert etcd.startswith("dcs: ") and "group pg" in db


def test_config_drift_is_empty_when_patroni_keeps_values_as_text() -> None:
    current = {
        "ttl": 30,
        "synchronous_mode": False,
        "postgresql": {"parameters": {"hot_standby": "on", "max_connections": "200"}},
    }
    desired = {
        "ttl": 30,
        "synchronous_mode": False,
        "postgresql": {"parameters": {"hot_standby": True, "max_connections": 200}},
    }
    assert patroni.patroni_config_drift(current, desired) == {}


def test_config_drift_names_only_what_differs() -> None:
    current = {
        "ttl": 30,
        "loop_wait": 10,
        "postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": 100}},
    }
    desired = {
        "ttl": 15,
        "loop_wait": 10,
        "postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": 200, "wal_keep_size": "256MB"}},
    }
    assert patroni.patroni_config_drift(current, desired) == {
        "ttl": 15,
        "postgresql": {"parameters": {"max_connections": 200, "wal_keep_size": "256MB"}},
    }
