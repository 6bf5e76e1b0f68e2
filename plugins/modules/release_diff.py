"""Ansible module: what a deploy would change, release by release, without changing anything."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_diff
short_description: Show what a deploy would change in each release, changing nothing
description:
  - For each release of the deploy's plan that changes, reads what serves (helm get values -o json,
    helm get manifest) and the release Helm would make (helm upgrade --install --dry-run=server
    --hide-secret -o json, the chart values on stdin), and says per release install, upgrade (versions,
    changed values by key, changed objects by name), scale back or no change.
  - Values whose key names a secret are masked; objects are named, never printed.
  - The dry run renders on the server (lookup sees the live Secrets), so an unchanged object does not
    show as changed; Helm writes no revision and no object.
options:
  namespace: {description: Namespace of the releases., type: str, required: true}
  kubeconfig: {description: Kubeconfig of the cluster., type: path, required: true}
  context: {description: Context of the kubeconfig (empty for its current one)., type: str, default: ""}
  chart: {description: Path of the chart the deploy releases., type: path, required: true}
  chart_version: {description: Version of that chart., type: str, default: ""}
  plan:
    description: "The deploy's plan, {service: {tier, values, changed, rescale}} (openpolicy_release_plan)."
    type: dict
    required: true
  deployed:
    description: "What Helm serves, {service: {revision, chart_version, ...}} (openpolicy_deployed_summary)."
    type: dict
    default: {}
  restore_point:
    description: Services whose migration the restore point is taken before (named in the summary line).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Show what the deploy would change
  openpolicy.deploy.release_diff:
    namespace: openpolicy-staging
    kubeconfig: ~/.kube/config
    chart: charts/openpolicy-service
    plan: "{{ service_releases_plan }}"
    deployed: "{{ __service_releases_deployed }}"
"""

RETURN = r"""
changes:
  description: "One entry per release: service, action, version, from_version, values, objects, migration, line."
  returned: always
  type: list
lines:
  description: One line per release and a closing line, for the operator.
  returned: always
  type: list
"""

import json  # noqa: E402 - after the documentation, as Ansible modules are laid out

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_diff, release_state  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **release_state.CLUSTER_OPTIONS,
            "chart": {"type": "path", "required": True},
            "chart_version": {"type": "str", "default": ""},
            "plan": {"type": "dict", "required": True},
            "deployed": {"type": "dict", "default": {}},
            "restore_point": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    base = release_state.cli_prefix(p)

    def helm(*args: str, data: str | None = None) -> str:
        rc, out, err = module.run_command([*base, *args], data=data, binary_data=True)
        if rc != 0:
            module.fail_json(msg=f"helm {' '.join(args[:2])}: {' '.join(err.split())[:300]}", rc=rc)
        return out

    changes = []
    for name in sorted(p["plan"]):
        entry = p["plan"][name]
        deployed = dry_run = None
        if name in p["deployed"]:
            deployed = {
                "values": json.loads(helm("get", "values", name, "--output", "json") or "null") or {},
                "manifest": helm("get", "manifest", name),
                "chart_version": p["deployed"][name].get("chart_version", ""),
            }
        if release_diff.helm_changes(entry):
            # The API server validates the dry run; Helm's own OpenAPI check is off (release_tier.py).
            argv = ["upgrade", "--install", name, p["chart"], "--dry-run=server", "--disable-openapi-validation"]
            argv += ["--hide-secret", "--output", "json"]
            dry_run = json.loads(helm(*argv, "--values", "-", data=json.dumps(entry.get("values") or {})))
        changes.append(release_diff.release_change(name, entry, deployed, dry_run, p["chart_version"]))
    lines = release_diff.plan_summary(changes, p["restore_point"], p["namespace"])
    diff = [c.pop("diff") for c in changes]
    # changed: the deploy would change something (the module itself never does).
    would_change = any(c["action"] != "none" for c in changes)
    shown = [d for d in diff if d["before"] or d["after"]]
    module.exit_json(changed=would_change, changes=changes, lines=lines, **({"diff": shown} if module._diff else {}))


if __name__ == "__main__":
    main()
