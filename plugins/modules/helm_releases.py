#!/usr/bin/python
"""Read the Helm releases of a namespace through the helm CLI (its JSON output)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: helm_releases
short_description: The releases of a namespace, their history and the values of each revision read
description:
  - "Runs C(helm list -o json), C(helm history -o json) and C(helm get values -o json), Helm's own
    interface; with O(labelled), O(namespace_objects) or O(kinds), the kubectl reads those options
    name beside C(helm list). Changes nothing."
  - "Each release is {history, deployed, current}; an entry is {revision, status, chart,
    chart_version, app_version, values_checksum, updated, description} (module_utils/release_state.py)."
options:
  namespace:
    description: Namespace of the releases.
    type: str
    required: true
  kubeconfig:
    description: Kubeconfig file.
    type: path
    required: true
  context:
    description: Context of that kubeconfig; empty for its current one.
    type: str
    default: ""
  chart:
    description: Only the releases of this chart (by name); empty for every release.
    type: str
    default: ""
  names:
    description: Only these releases; empty for every release of the chart.
    type: list
    elements: str
    default: []
  full_history:
    description: Read the values of every revision (a one-service rollback compares them); otherwise
      only those of the revision deployed and the latest.
    type: bool
    default: false
  labelled:
    description: "Trust the labels a deploy records on each revision it makes
      (module_utils/release_state.py digest_labels): one C(kubectl get secrets -l
      owner=helm,status=deployed --show-labels) reads them for every release (the API server's
      table of names and labels: no release record is sent), and only a release without labels
      made for its latest, deployed revision is read with helm history and helm get values. Its
      history then holds the deployed entry only."
    type: bool
    default: false
  namespace_objects:
    description: "Read the namespace's Deployments and ConfigMaps (one C(kubectl get -o json)) and
      the names and labels of its Secrets (the table of C(kubectl get secrets --show-labels),
      which with O(labelled) gives the labels too: no Secret's data is sent) beside C(helm list),
      and return them as RV(listing) (Deployments and ConfigMaps) and RV(secret_names): what a
      no-op deploy needs to prove that nothing is to do, and what the summary shows, at once."
    type: bool
    default: false
  kinds:
    description: "Other kinds to list at the same time, with one C(kubectl get KINDS -o json)
      beside C(helm list) (the baseline's PriorityClasses: one call fewer before the releases),
      returned whole as RV(objects)."
    type: list
    elements: str
    default: []
  binary:
    description: The helm program.
    type: str
    default: helm
  kubectl:
    description: The kubectl program (with O(labelled)).
    type: str
    default: kubectl
author: openpolicy-deploy maintainers
"""

EXAMPLES = r"""
- name: Read what serves in the namespace
  openpolicy.deploy.helm_releases:
    namespace: openpolicy-local
    kubeconfig: .local/kubeconfig
    chart: openpolicy-service
  register: releases
"""

RETURN = r"""
releases:
  description: "{name: {history, deployed, current}}."
  returned: always
  type: dict
listing:
  description: "The namespace's Deployments and ConfigMaps as one List (C(kubectl get -o json))."
  returned: with O(namespace_objects)
  type: dict
secret_names:
  description: Names of the namespace's Secrets (no data).
  returned: with O(namespace_objects)
  type: list
objects:
  description: "The objects of O(kinds) as one List (C(kubectl get -o json))."
  returned: with O(kinds)
  type: dict
"""

import json  # noqa: E402 - after the documentation, as Ansible modules are laid out
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state  # noqa: E402

WORKERS = 4


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **release_state.CLUSTER_OPTIONS,
            "chart": {"type": "str", "default": ""},
            "names": {"type": "list", "elements": "str", "default": []},
            "full_history": {"type": "bool", "default": False},
            "labelled": {"type": "bool", "default": False},
            "namespace_objects": {"type": "bool", "default": False},
            "kinds": {"type": "list", "elements": "str", "default": []},
            "binary": {"type": "str", "default": "helm"},
            "kubectl": {"type": "str", "default": "kubectl"},
        },
        supports_check_mode=True,
    )
    params = module.params
    base = release_state.cli_prefix(params, params["binary"])

    def helm(*args: str):
        rc, out, err = module.run_command([*base, *args])
        if rc != 0:
            module.fail_json(msg=f"helm {args[0]}: {' '.join(err.split())}", rc=rc)
        return json.loads(out or "null")

    labelled = params["labelled"] and not params["full_history"]
    kubectl = release_state.cli_prefix(params, params["kubectl"])
    # The Secrets' names and labels only, as the API server's table (release_state.secret_table):
    # every Secret of the namespace, or Helm's storage objects of the deployed revisions.
    secrets = [*kubectl, "get", "secrets", "--show-labels", "--no-headers"]
    if not params["namespace_objects"]:
        secrets += ["--selector", "owner=helm,status=deployed"]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        # Helm 4 has no --all: without a state flag, `helm list` shows the releases of every state
        # (failed and pending included). The labels and the namespace's objects are read at the
        # same time.
        listed = pool.submit(helm, "list", "--output", "json")
        stored = pool.submit(module.run_command, secrets) if labelled or params["namespace_objects"] else None
        objects = (
            pool.submit(module.run_command, [*kubectl, "get", "deployments,configmaps", "-o", "json"])
            if params["namespace_objects"]
            else None
        )
        kinds = params["kinds"]
        other = pool.submit(module.run_command, [*kubectl, "get", ",".join(kinds), "-o", "json"]) if kinds else None
        listing = listed.result() or []
        rc, out, err = stored.result() if stored else (1, "", "")
        objects_rc, objects_out, objects_err = objects.result() if objects else (0, "", "")
        other_rc, other_out, other_err = other.result() if other else (0, "", "")
    if other_rc != 0:
        module.fail_json(msg=f"kubectl get {','.join(kinds)}: {' '.join(other_err.split())}", rc=other_rc)
    wanted = set(params["names"])
    names = sorted(
        item["name"]
        for item in listing
        if (not wanted or item["name"] in wanted)
        and (not params["chart"] or release_state.split_chart(item.get("chart", ""))[0] == params["chart"])
    )

    def one(name: str) -> tuple[str, dict]:
        history = helm("history", name, "--output", "json") or []
        values = {}
        for revision in release_state.revisions_to_read(history, params["full_history"]):
            values[revision] = helm("get", "values", name, "--revision", str(revision), "--output", "json") or {}
        return name, release_state.release(history, values)

    extra = {"objects": json.loads(other_out)} if kinds else {}
    if params["namespace_objects"]:
        for failed_rc, failed_err in ((rc, err), (objects_rc, objects_err)):
            if failed_rc != 0:
                module.fail_json(msg=f"kubectl get: {' '.join(failed_err.split())}", rc=failed_rc)
        extra |= release_state.namespace_objects(objects_out, release_state.secret_table(out))
    releases = {}
    if labelled and names:
        # No labels to read (another storage driver, no right to list Secrets): every release the slow way.
        labels = release_state.storage_labels(release_state.secret_table(out)) if rc == 0 else {}
        by_name = {item["name"]: item for item in listing}
        for name in names:
            found = release_state.labelled_release(by_name[name], labels.get(name))
            if found:
                releases[name] = found
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        releases |= dict(pool.map(one, [name for name in names if name not in releases]))
    releases = dict(sorted(releases.items()))
    module.exit_json(changed=False, releases=releases, **extra)


if __name__ == "__main__":
    main()
