"""The action apt_packages: when a plain install is already in place, dpkg's answer stands for
apt's; anything else goes to apt itself. The Molecule scenarios run it on real hosts (a first
converge through apt, the idempotence run through dpkg-query)."""

from __future__ import annotations

import pytest
from ansible_collections.openpolicy.deploy.plugins.action import apt_packages as apt

DPKG = "postgresql-15\t15.14-0+deb12u1\tii \npython3-psycopg2\t2.9.5-1+b1\tii \nredis-server\t5:7.0.15-1~deb12u5\trc \n"


def test_a_plain_install_names_its_packages_and_versions() -> None:
    args = {"name": ["postgresql-15", "python3-psycopg2=2.9.*"], "update_cache": True, "cache_valid_time": 3600}
    assert apt.wanted_packages(args) == {"postgresql-15": None, "python3-psycopg2": "2.9.*"}
    assert apt.wanted_packages({"name": "openssl,acl", "install_recommends": False}) == {"openssl": None, "acl": None}
    assert apt.wanted_packages({"pkg": "haproxy", "state": "present"}) == {"haproxy": None}


@pytest.mark.parametrize(
    "args",
    [
        {"name": "haproxy", "state": "latest"},
        {"name": "haproxy", "state": "absent"},
        {"name": "haproxy", "upgrade": "dist"},
        {"deb": "/tmp/x.deb"},
        {"name": "./local.deb"},
        {"name": "libc6:amd64"},
        {"name": "haproxy>=2.6"},
        {"name": []},
        {"update_cache": True},
    ],
)
def test_anything_but_a_plain_install_goes_to_apt(args) -> None:
    assert apt.wanted_packages(args) is None


def test_installed_means_dpkg_status_ii_in_a_matching_version() -> None:
    assert apt.all_installed({"postgresql-15": None, "python3-psycopg2": "2.9.*"}, DPKG)
    assert apt.all_installed({"postgresql-15": "15.14-0+deb12u1"}, DPKG)
    assert not apt.all_installed({"postgresql-15": "15.13*"}, DPKG)
    # Removed with its configuration kept (rc) is not installed; unknown to dpkg neither.
    assert not apt.all_installed({"redis-server": None}, DPKG)
    assert not apt.all_installed({"haproxy": None}, DPKG)
