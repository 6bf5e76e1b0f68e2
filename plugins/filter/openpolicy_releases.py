"""Filters of the deploy, release set and rollback roles. The logic lives in module_utils
(catalog: catalog -> platform inputs and chart values; release_state: release state, rollback
planning, tables; inputs: the operator's inputs), unit-tested in tests/unit; this file only
names it for Jinja.
"""

from __future__ import annotations

from ansible_collections.openpolicy.deploy.plugins.module_utils import catalog, inputs, release_state


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_platform_inputs": catalog.platform_inputs,
            "openpolicy_schemas_with_limits": catalog.schemas_with_limits,
            "openpolicy_role_passwords": catalog.role_passwords,
            "openpolicy_user_passwords": catalog.user_passwords,
            "openpolicy_service_values": catalog.service_values,
            "openpolicy_secret_keys": catalog.secret_env,
            "openpolicy_values_checksum": catalog.values_checksum,
            "openpolicy_release_plan": catalog.release_plan,
            "openpolicy_placeholder_passwords": catalog.placeholder_passwords,
            "openpolicy_placeholder_secrets": catalog.placeholder_secrets,
            "openpolicy_secret_checksums": catalog.secret_checksums,
            "openpolicy_services_with_secrets": catalog.services_with_secrets,
            "openpolicy_release_input_errors": inputs.release_input_errors,
            "openpolicy_rollback_input_errors": inputs.rollback_input_errors,
            "openpolicy_cluster_input_errors": inputs.cluster_input_errors,
            "openpolicy_namespace_input_errors": inputs.namespace_input_errors,
            "openpolicy_secret_input_errors": inputs.secret_input_errors,
            "openpolicy_backup_input_errors": inputs.backup_input_errors,
            "openpolicy_previous_revision": release_state.previous_revision,
            "openpolicy_failed_upgrade": release_state.failed_upgrade,
            "openpolicy_helm_error": release_state.helm_error,
            "openpolicy_interrupted_releases": release_state.interrupted_releases,
            "openpolicy_cluster_unreachable": release_state.cluster_unreachable,
            "openpolicy_table": release_state.table,
            "openpolicy_namespace_state": release_state.namespace_state,
            "openpolicy_deployed_summary": release_state.deployed_summary,
            "openpolicy_live_services": release_state.live_services,
            "openpolicy_with_backup_label": release_state.with_backup_label,
            "openpolicy_release_sets": release_state.release_sets,
            "openpolicy_same_set": release_state.same_set,
            "openpolicy_rollback_targets": release_state.rollback_targets,
            "openpolicy_summary_rows": release_state.summary_rows,
            "openpolicy_secrets_to_apply": release_state.secrets_to_apply,
            "openpolicy_secrets_to_send": release_state.secrets_to_send,
            "openpolicy_helm_owners": release_state.helm_owners,
            "openpolicy_digest_labels": release_state.digest_labels,
            "openpolicy_deploy_reasons": release_state.deploy_reasons,
        }
