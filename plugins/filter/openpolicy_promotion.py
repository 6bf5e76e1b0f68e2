"""Filters of roles/release_promotion and the deploy's plan, over plugins/module_utils/openpolicy_drift.py.

- ``openpolicy_promotion_input_errors``: what is wrong with promote.yml's extra-vars, one line each.
- ``openpolicy_promotion_errors``: why a live set cannot be promoted, one line each.
- ``openpolicy_pins_text``: an inventory's services.yml with its version pins replaced.
- ``openpolicy_with_live_replicas``: the deploy's plan, a Deployment scaled by hand marked changed.
- ``openpolicy_migrations``: the upgrades of the deploy's plan that run a migration hook.
"""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.module_utils import openpolicy_drift, release_diff


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_promotion_input_errors": openpolicy_drift.promotion_input_errors,
            "openpolicy_promotion_errors": openpolicy_drift.promotion_errors,
            "openpolicy_pins_text": openpolicy_drift.pins_text,
            "openpolicy_with_live_replicas": openpolicy_drift.with_live_replicas,
            "openpolicy_migrations": release_diff.migrations,
        }
