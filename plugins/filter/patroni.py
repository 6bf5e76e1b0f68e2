"""Filters of the patroni role; the logic lives in module_utils/patroni.py."""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.module_utils import patroni


class FilterModule:
    def filters(self) -> dict:
        return {
            "patroni_topology_errors": patroni.patroni_topology_errors,
            "patroni_config_drift": patroni.patroni_config_drift,
        }
