"""Filters of roles/redis; the logic lives in module_utils/redis_config.py."""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.module_utils import redis_config


class FilterModule:
    def filters(self) -> dict:
        return {
            "redis_config_drift": redis_config.redis_config_drift,
            "redis_config_replicaof": redis_config.redis_config_replicaof,
        }
