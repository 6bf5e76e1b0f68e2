#!/usr/bin/python
"""Ansible module: compare a namespace's releases and objects with what the inventory would deploy."""

from __future__ import annotations

DOCUMENTATION = r"""
module: openpolicy_drift
short_description: Compare the live releases of a namespace with what the inventory would deploy
description:
  - Reads the releases of one chart in a namespace through the helm CLI's JSON (helm list, helm get
    values, helm get manifest) and the objects through kubectl get -o json, then compares them with
    the chart values the deploy would use (the deploy's plan), the chart version and the checksums
    of the services' Secrets.
  - Changes nothing; a report with no differences means a deploy would change nothing.
options:
  namespace: {description: Namespace of the releases., type: str, required: true}
  kubeconfig: {description: Kubeconfig of the cluster., type: path, required: true}
  context: {description: Context of the kubeconfig (empty for its current one)., type: str, default: ""}
  chart_name: {description: Chart whose releases are compared., type: str, default: openpolicy-service}
  chart_version: {description: Version of the chart the inventory deploys., type: str, required: true}
  plan:
    description: "The deploy's plan, {service: {tier, values, changed}} (openpolicy_release_plan)."
    type: dict
    required: true
  secret_checksums:
    description: "{service: checksum of its Secret's data}, as the deploy computes secretChecksum."
    type: dict
    default: {}
  environment: {description: Environment name written into the report., type: str, default: ""}
"""

RETURN = r"""
report:
  description: "{environment, namespace, chart_version, differences, unhealthy, live}; one-line messages."
  returned: always
  type: dict
"""

import json  # noqa: E402 (Ansible reads DOCUMENTATION first)
import subprocess  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.openpolicy.deploy.plugins.module_utils.openpolicy_drift import (  # noqa: E402
    LIVE_KINDS,
    drift_report,
    manifest_objects,
)
from ansible_collections.openpolicy.deploy.plugins.module_utils.release_state import (  # noqa: E402
    CLUSTER_OPTIONS,
    cli_prefix,
)


def _run(module: AnsibleModule, argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        module.fail_json(msg=f"{' '.join(argv[:3])}: {' '.join(result.stderr.split())[:300]}")
    return result.stdout


def read_state(module: AnsibleModule) -> dict:
    p = module.params
    helm, kubectl = cli_prefix(p), cli_prefix(p, "kubectl")
    # Helm 4 lists every status (failed and pending too) without a flag.
    listed = json.loads(_run(module, [*helm, "list", "--output", "json"]) or "[]")
    releases = {}
    for entry in listed:
        if not entry["chart"].startswith(p["chart_name"] + "-"):
            continue
        name = entry["name"]
        values = json.loads(_run(module, [*helm, "get", "values", name, "--output", "json"]) or "null")
        manifest = _run(module, [*helm, "get", "manifest", name])
        releases[name] = {
            "revision": int(entry["revision"]),
            "status": entry["status"],
            "chart": entry["chart"],
            "app_version": entry.get("app_version", ""),
            "values": values or {},
            "objects": manifest_objects(manifest),
        }
    objects = json.loads(_run(module, [*kubectl, "get", LIVE_KINDS, "--output", "json"]))["items"]
    return {"releases": releases, "objects": objects}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CLUSTER_OPTIONS,
            "chart_name": {"type": "str", "default": "openpolicy-service"},
            "chart_version": {"type": "str", "required": True},
            "plan": {"type": "dict", "required": True},
            "secret_checksums": {"type": "dict", "default": {}, "no_log": False},
            "environment": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    report = drift_report(
        read_state(module),
        {name: entry["values"] for name, entry in p["plan"].items()},
        p["chart_version"],
        p["secret_checksums"],
        {"environment": p["environment"], "namespace": p["namespace"], "chart_name": p["chart_name"]},
    )
    module.exit_json(changed=False, report=report)


if __name__ == "__main__":
    main()
