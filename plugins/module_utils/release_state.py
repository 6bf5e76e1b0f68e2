"""Release state and rollback planning, from Helm's own interface (the helm CLI's JSON output:
`helm list -o json`, `helm history -o json`, `helm get values -o json`), never from Helm's
storage Secrets. Pure functions, unit-tested in tests/unit; the module helm_releases runs the
helm commands and hands their output here.

A release is {"history": [entry, ...] (oldest first), "deployed": the entry serving or None,
"current": latest revision}; an entry is {revision, status, chart, chart_version, app_version,
values_checksum, updated, description}.
"""

from __future__ import annotations

import json
import re

from ansible_collections.openpolicy.deploy.plugins.module_utils.catalog import plain, values_checksum

SET_LABEL = "openpolicy.dev/release-set"
# The options of every module that reads a namespace's releases (helm_releases, openpolicy_drift,
# release_diff), and the helm/kubectl command prefix they make.
CLUSTER_OPTIONS = {
    "namespace": {"type": "str", "required": True},
    "kubeconfig": {"type": "path", "required": True},
    "context": {"type": "str", "default": ""},
}


def cli_prefix(params: dict, binary: str = "helm") -> list[str]:
    """``helm`` (or ``kubectl``) with the namespace, kubeconfig and context of a module's params."""
    flag = "--kube-context" if binary.rsplit("/", 1)[-1].startswith("helm") else "--context"
    base = [binary, "--namespace", params["namespace"], "--kubeconfig", params["kubeconfig"]]
    return base + ([flag, params["context"]] if params.get("context") else [])


_CHART = re.compile(r"^(?P<name>.+?)-(?P<version>v?[0-9]+\.[0-9]+\.[0-9]+.*)$")


def split_chart(chart: str) -> tuple[str, str]:
    """Helm's "openpolicy-service-0.1.0" as ("openpolicy-service", "0.1.0")."""
    match = _CHART.match(chart or "")
    return (match["name"], match["version"]) if match else (chart or "", "")


def history_entry(item: dict, values: dict | None) -> dict:
    """One `helm history -o json` item, with the user values of that revision when read
    (app_version is the image tag the values set, else the chart's appVersion)."""
    name, version = split_chart(item.get("chart", ""))
    tag = ((values or {}).get("image") or {}).get("tag") if values is not None else None
    return {
        "revision": int(item["revision"]),
        "status": item.get("status", ""),
        "chart": name,
        "chart_version": version,
        "app_version": str(tag if tag is not None else item.get("app_version", "")),
        "values_checksum": values_checksum(values) if values is not None else "",
        "updated": str(item.get("updated", "")),
        "description": item.get("description", ""),
    }


def release(history: list[dict], values: dict | None = None) -> dict:
    """A release from its `helm history -o json` and {revision: user values} of the revisions read."""
    values = {int(k): v for k, v in (values or {}).items()}
    entries = sorted(
        (history_entry(item, values.get(int(item["revision"]))) for item in history or []),
        key=lambda e: e["revision"],
    )
    deployed = [e for e in entries if e["status"] == "deployed"]
    return {
        "history": entries,
        "deployed": deployed[-1] if deployed else None,
        "current": entries[-1]["revision"] if entries else 0,
    }


# What a deploy records on each revision it makes, as Helm release labels (helm upgrade
# --labels): the values' sha256 (in two halves, a label value holds 63 characters), the image tag
# and the revision the labels were made for. A later plan reads them for every release with one
# `kubectl get secrets -l owner=helm,status=deployed` (labels only; nothing is decoded) instead
# of `helm history` and `helm get values` per release. Labels copied onto another revision (a
# rollback, or a hand-made `helm upgrade`, which merge the earlier labels) name another revision
# and are not trusted: that release is read the slow way.
DIGEST_LABELS = ("openpolicy.dev/values-sha256-a", "openpolicy.dev/values-sha256-b")
DIGEST_REVISION_LABEL = "openpolicy.dev/values-revision"
APP_VERSION_LABEL = "openpolicy.dev/app-version"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def digest_labels(values: dict, revision: int) -> dict[str, str]:
    """The release labels a deploy sets on the revision ``revision`` it makes with ``values``."""
    digest = values_checksum(values).removeprefix("sha256:")
    labels = {DIGEST_LABELS[0]: digest[:32], DIGEST_LABELS[1]: digest[32:], DIGEST_REVISION_LABEL: str(revision)}
    tag = str(((plain(values) or {}).get("image") or {}).get("tag") or "")
    if _LABEL_VALUE.match(tag):
        labels[APP_VERSION_LABEL] = tag
    return labels


def labelled_release(item: dict, labels: dict | None) -> dict | None:
    """A release from its `helm list -o json` item and the labels of its deployed revision's
    storage object, when those labels were recorded for exactly that revision and it is the
    latest: {"history": [that entry], "deployed": it, "current": revision}. None otherwise (read
    it with helm history and helm get values)."""
    labels = labels or {}
    revision = str(item.get("revision", ""))
    if (
        item.get("status") != "deployed"
        or not revision
        or labels.get("status") != "deployed"
        or labels.get("version") != revision
        or labels.get(DIGEST_REVISION_LABEL) != revision
        or not all(labels.get(key) for key in (*DIGEST_LABELS, APP_VERSION_LABEL))
    ):
        return None
    name, version = split_chart(item.get("chart", ""))
    entry = {
        "revision": int(revision),
        "status": "deployed",
        "chart": name,
        "chart_version": version,
        "app_version": labels[APP_VERSION_LABEL],
        "values_checksum": "sha256:" + labels[DIGEST_LABELS[0]] + labels[DIGEST_LABELS[1]],
        "updated": str(item.get("updated", "")),
        "description": "",
    }
    return {"history": [entry], "deployed": entry, "current": int(revision)}


def secret_table(text: str) -> list[dict]:
    """The Secrets of a `kubectl get secrets --show-labels --no-headers` (the API server's table:
    NAME TYPE DATA AGE LABELS, made from each Secret's metadata: no Secret's data is sent, where
    `-o json` sent every value, Helm's storage objects some 45 KB of release record each), as
    [{"kind": "Secret", "metadata": {"name", "labels"}}]. No label key or value holds a space
    or a comma, nor a value an equals sign."""
    items = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        pairs = [] if fields[-1] == "<none>" else [pair.split("=", 1) for pair in fields[-1].split(",")]
        labels = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
        items.append({"kind": "Secret", "metadata": {"name": fields[0], "labels": labels}})
    return items


def storage_labels(secrets: list[dict]) -> dict[str, dict]:
    """{release name: labels} of the Secrets read by secret_table (Helm's storage objects of the
    deployed revisions: their labels only)."""
    out = {}
    for item in secrets:
        labels = (item.get("metadata") or {}).get("labels") or {}
        if labels.get("owner") == "helm" and labels.get("name") and labels.get("status") == "deployed":
            out[labels["name"]] = labels
    return out


def namespace_objects(listing: dict | str, secrets: list[dict]) -> dict:
    """From a `kubectl get deployments,configmaps -o json` of a namespace and its Secrets (names
    and labels, secret_table): its Deployments and ConfigMaps as one List ("listing", what
    namespace_state reads) and the names of its Secrets ("secret_names")."""
    return {
        "listing": {"apiVersion": "v1", "kind": "List", "items": _items(listing)},
        "secret_names": sorted(item["metadata"]["name"] for item in secrets),
    }


def revisions_to_read(history: list[dict], full: bool) -> list[int]:
    """The revisions whose values a reader needs: all of them (a one-service rollback compares
    contents) or only the one deployed and the latest (plans, sets, summaries)."""
    revisions = sorted(int(item["revision"]) for item in history or [])
    if full:
        return revisions
    deployed = [int(i["revision"]) for i in history or [] if i.get("status") == "deployed"]
    return sorted(set(deployed[-1:] + revisions[-1:]))


def previous_revision(release_: dict) -> int:
    """The revision a one-service rollback returns to: the latest earlier revision that served
    (superseded or deployed) with other content than what serves now; 0 when there is none."""
    deployed = release_.get("deployed")
    if not deployed:
        return 0
    for entry in reversed(release_["history"]):
        if entry["revision"] >= deployed["revision"] or entry["status"] not in ("superseded", "deployed"):
            continue
        if (entry["values_checksum"], entry["chart_version"]) != (
            deployed["values_checksum"],
            deployed["chart_version"],
        ):
            return entry["revision"]
    return 0


HELM_ERROR_CHARS = 300


def helm_error(output: str, limit: int = HELM_ERROR_CHARS) -> str:
    """Helm's own error out of its stderr, on one line, for the failure lines of a deploy and a
    rollback: from its last "Error: " on, since the lines before are its log (a hook's failure
    first says it could not stream the hook pod's logs, which took the whole line and cut off
    the resource and why it failed)."""
    text = " ".join(output.split())
    start = text.rfind("Error: ")
    if start >= 0:
        text = text[start + len("Error: ") :]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_upgrade(service: str, release_: dict | None, detail: str = "", stopped: str = "") -> str:
    """The one line a failed upgrade ends with: "service X: revision N failed, revision M is
    serving (how it got there): why N failed". ``detail`` (Helm's stderr: its error is kept)
    stands in for the reason when the history has no failed revision; ``stopped`` (why the
    deploy's watch stopped the upgrade: its pods could not start) is the reason when given."""
    history = (release_ or {}).get("history") or []
    failed = [e for e in history if e["status"] == "failed"]
    deployed = (release_ or {}).get("deployed")
    why = " ".join((stopped or (failed[-1].get("description", "") if failed else helm_error(detail))).split())
    failed_text = f"revision {failed[-1]['revision']} failed" if failed else "the upgrade failed"
    if deployed:
        how = f" ({deployed['description']})" if deployed.get("description") else ""
        serving = f"revision {deployed['revision']} is serving{how}"
    else:
        serving = "no revision is serving (the first install was removed)"
    return f"service {service}: {failed_text}, {serving}" + (f": {why}" if why else "")


PENDING = ("pending-install", "pending-upgrade", "pending-rollback")
# What an unreachable API server looks like in Helm's and kubectl's errors, most specific first.
_UNREACHABLE = (
    ("connection refused", "connection refused"),
    ("i/o timeout", "no answer (i/o timeout)"),
    ("no route to host", "no route to host"),
    ("context deadline exceeded", "no answer (timed out)"),
    ("cluster unreachable", "cluster unreachable"),
    ("eof", "connection closed (EOF)"),
)


def _helm(namespace: str, context: str, *args: str) -> str:
    where = f" --kube-context {context}" if context else ""
    return f"helm{where} -n {namespace} " + " ".join(args)


def interrupted(service: str, release_: dict | None, namespace: str, context: str = "") -> dict | None:
    """What to do with a release an interrupted run left pending (its latest revision in
    pending-install, pending-upgrade or pending-rollback, on which Helm refuses every upgrade):
    {"action": "rollback", "target": N} to the last revision that served (deployed, else the
    newest superseded), {"action": "uninstall"} for a first install that never served, or
    {"action": "stop"} when no revision served and Helm's history cannot tell what to return to;
    each with the one line that says so ("line") and the helm command ("command"). None when the
    release is not pending."""
    history = (release_ or {}).get("history") or []
    if not history or history[-1]["status"] not in PENDING:
        return None
    latest = history[-1]
    stuck = f"service {service}: revision {latest['revision']} was left {latest['status']} by an interrupted run"
    served = [e for e in history[:-1] if e["status"] in ("deployed", "superseded")]
    deployed = [e for e in served if e["status"] == "deployed"]
    base = {"service": service, "revision": latest["revision"], "status": latest["status"]}
    if served:
        target = (deployed or served)[-1]["revision"]
        command = _helm(namespace, context, "rollback", service, str(target))
        line = f"{stuck}; returned to revision {target}, the last deployed ({command})"
        return {**base, "action": "rollback", "target": target, "command": command, "line": line}
    if latest["status"] == "pending-install" and len(history) == 1:
        command = _helm(namespace, context, "uninstall", service)
        line = f"{stuck} and never served; uninstalled ({command}), this run installs it again"
        return {**base, "action": "uninstall", "target": 0, "command": command, "line": line}
    command = _helm(namespace, context, "uninstall", service)
    line = (
        f"{stuck} and no earlier revision served, so there is none to return to; "
        f"look at {_helm(namespace, context, 'history', service)}, then clear it with: {command} "
        "(or helm rollback to the revision you choose), and run again"
    )
    return {**base, "action": "stop", "target": 0, "command": command, "line": line}


def interrupted_releases(releases: dict, namespace: str, context: str = "") -> list[dict]:
    """interrupted() for every release of a namespace that is pending, by name."""
    plans = (interrupted(name, item, namespace, context) for name, item in sorted((releases or {}).items()))
    return [plan for plan in plans if plan]


def cluster_unreachable(service: str, cluster: str, action: str, error: str = "") -> str:
    """The one line a run ends with when the cluster stops answering while a release is in
    flight: the cluster, the service, what was happening, and the cause in a few words (never
    Helm's raw error)."""
    text = " ".join((error or "").split()).lower()
    cause = next((said for needle, said in _UNREACHABLE if needle in text), "no answer")
    return (
        f"service {service}: cluster {cluster} became unreachable ({cause}) while its {action} was in flight; "
        "the release may be left pending: once the cluster answers, run the same playbook again "
        "(it returns a pending release to its last deployed revision first)"
    )


def live_services(releases: dict, chart: str = "openpolicy-service") -> dict[str, dict]:
    """What serves now, per service: the entry a release set records."""
    out = {}
    for name, item in sorted((releases or {}).items()):
        deployed = item.get("deployed")
        if not deployed or deployed.get("chart") != chart:
            continue
        out[name] = {
            "chart_version": deployed["chart_version"],
            "app_version": deployed["app_version"],
            "revision": deployed["revision"],
            "values_checksum": deployed["values_checksum"],
            "time": deployed["updated"],
            "backup_label": "",
        }
    return out


def with_backup_label(services: dict, label: str, migrated: list[str]) -> dict:
    """The live services as a set records them: the restore point's label on the services whose
    migration ran after it, empty elsewhere."""
    return {
        name: {**entry, "backup_label": label if name in (migrated or []) else ""} for name, entry in services.items()
    }


def release_sets(configmaps: list[dict]) -> list[dict]:
    """The recorded release sets, oldest first: {number, previous, reason, recorded, name, services}."""
    sets = []
    for configmap in configmaps or []:
        labels = configmap.get("metadata", {}).get("labels") or {}
        if SET_LABEL not in labels:
            continue
        data = configmap.get("data") or {}
        sets.append(
            {
                "number": int(data.get("set", labels[SET_LABEL])),
                "previous": int(data.get("previous") or 0),
                "reason": data.get("reason", ""),
                "recorded": data.get("recorded", ""),
                "name": configmap["metadata"]["name"],
                "services": json.loads(data.get("services.json") or "{}"),
            }
        )
    return sorted(sets, key=lambda item: item["number"])


def _content(entry: dict) -> tuple:
    return (entry.get("chart_version"), entry.get("app_version"), entry.get("values_checksum"))


def same_set(services: dict, recorded: dict | None) -> bool:
    """True when the live services equal a recorded set (revisions included, backup labels not)."""
    if recorded is None:
        return False
    keys = ("chart_version", "app_version", "revision", "values_checksum")

    def strip(entries: dict | None) -> dict:
        return {n: {k: e.get(k) for k in keys} for n, e in (entries or {}).items()}

    return strip(services) == strip(recorded.get("services"))


def rollback_targets(target: dict, releases: dict) -> dict:
    """{"targets": {service: revision}, "missing": [...]}: the releases that must go back to
    the target set's revisions (those whose serving content differs from it), and the services
    whose target revision Helm no longer keeps."""
    targets, missing = {}, []
    for name, entry in sorted((target.get("services") or {}).items()):
        item = (releases or {}).get(name) or {}
        deployed = item.get("deployed")
        if deployed and _content(deployed) == _content(entry):
            continue
        revisions = {e["revision"] for e in item.get("history") or []}
        if entry["revision"] not in revisions:
            missing.append(f"{name} revision {entry['revision']}")
            continue
        targets[name] = entry["revision"]
    return {"targets": targets, "missing": missing}


def summary_rows(services: dict, releases: dict, deployments: list[dict]) -> list[dict]:
    """One summary row per release: service, version, revision, ready replicas, status."""
    ready = {}
    for deployment in deployments or []:
        status = deployment.get("status") or {}
        wanted = (deployment.get("spec") or {}).get("replicas", 0)
        ready[deployment["metadata"]["name"]] = f"{status.get('readyReplicas', 0)}/{wanted}"
    rows = []
    for name in sorted(releases or {}):
        item = releases[name]
        latest = item["history"][-1] if item.get("history") else {}
        entry = (services or {}).get(name) or {}
        rows.append(
            {
                "service": name,
                "version": entry.get("app_version", latest.get("app_version", "")),
                "revision": entry.get("revision", latest.get("revision", "")),
                "ready": ready.get(name, "-"),
                "status": latest.get("status", ""),
            }
        )
    return rows


def _items(listing: dict | str) -> list[dict]:
    if isinstance(listing, str):
        listing = json.loads(listing or "{}")
    listing = listing or {}
    # `kubectl get <kind> <one name> -o json` prints the object itself, not a List.
    if "items" not in listing and listing.get("metadata"):
        return [plain(listing)]
    return plain(listing.get("items") or [])


def namespace_state(listing: dict | str) -> dict:
    """What one `kubectl get configmaps,deployments -o json` of a namespace says (the JSON text
    or its parsed form): {"sets": release_sets, "deployments": [...]}."""
    items = _items(listing)
    return {
        "sets": release_sets([i for i in items if i.get("kind") == "ConfigMap"]),
        "deployments": [
            {
                "metadata": {"name": i["metadata"]["name"]},
                "spec": {"replicas": i["spec"].get("replicas", 0)},
                "status": i.get("status") or {},
            }
            for i in items
            if i.get("kind") == "Deployment"
        ],
    }


def deployed_summary(releases: dict) -> dict[str, dict]:
    """{service: {revision, latest, values_checksum, chart_version, app_version}}: what release_plan compares
    (small, so that Ansible passes it around cheaply)."""
    out = {}
    for name, item in (releases or {}).items():
        deployed = item.get("deployed")
        if deployed:
            out[name] = {
                "revision": deployed["revision"],
                "latest": item["history"][-1]["revision"],
                "values_checksum": deployed["values_checksum"],
                "chart_version": deployed["chart_version"],
                "app_version": deployed["app_version"],
            }
    return out


def secrets_to_apply(desired: list[dict], listing: dict | str) -> list[dict]:
    """The Secrets whose data or labels differ from the namespace's listing (`kubectl get
    secrets -o json`): an unchanged Secret is not applied again."""
    existing = {i["metadata"]["name"]: i for i in _items(listing) if i.get("kind", "Secret") == "Secret"}
    out = []
    for secret in plain(desired) or []:
        current = existing.get(secret["metadata"]["name"])
        labels = (current or {}).get("metadata", {}).get("labels") or {}
        if (
            current is None
            or (current.get("data") or {}) != secret["data"]
            or any(labels.get(k) != v for k, v in secret["metadata"]["labels"].items())
        ):
            out.append(secret)
    return out


def secrets_to_send(desired: list[dict], listing: dict | str) -> dict[str, list[dict]]:
    """The Secrets that differ from the namespace's listing, split by the kubectl verb that sends
    them: `create` for those missing, `replace` (whole, so a key no longer needed disappears) for
    those present."""
    existing = set(object_names(listing))
    send = secrets_to_apply(desired, listing)
    return {
        "create": [s for s in send if s["metadata"]["name"] not in existing],
        "replace": [s for s in send if s["metadata"]["name"] in existing],
    }


def object_names(listing: dict | str) -> list[str]:
    """The names of the objects of a `kubectl get ... -o json` listing."""
    return sorted(i["metadata"]["name"] for i in _items(listing))


def helm_owners(listing: dict | str, kind: str = "", label: str = "") -> list[str]:
    """The Helm releases that own the objects of a `kubectl get ... -o json` listing
    (annotation meta.helm.sh/release-name; "" for an object Helm does not own), optionally only
    the objects of one kind that carry a label ("key=value")."""
    key, _, value = label.partition("=")
    return sorted(
        {
            ((i.get("metadata") or {}).get("annotations") or {}).get("meta.helm.sh/release-name", "")
            for i in _items(listing)
            if (not kind or i.get("kind") == kind)
            and (not key or ((i.get("metadata") or {}).get("labels") or {}).get(key) == value)
        }
    )


def table(rows: list[dict], columns: list[str]) -> list[str]:
    """Rows as aligned text lines, a header first (the summaries)."""
    cells = [[str(c) for c in columns]] + [[str(row.get(c, "")) for c in columns] for row in rows or []]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in cells]


def deploy_reasons(plan: dict, state: dict, needed_secrets: list[str], namespace: str, context: str = "") -> list[str]:
    """Why a deploy has something to do, one short reason each; none proves that a run of
    ``plan`` (release_plan of the run's services against ``state``, the helm_releases result read
    with labelled and namespace_objects) would change nothing: every release of the run as
    planned (values, chart, version: the digest labels), no Deployment scaled by hand, no release
    left pending, every Secret the services read present and the live set recorded."""
    from ansible_collections.openpolicy.deploy.plugins.module_utils.openpolicy_drift import with_live_replicas

    releases = state.get("releases") or {}
    items = _items(state.get("listing") or {})
    deployments = [
        i
        for i in items
        if i.get("kind") == "Deployment"
        and ((i.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by") == "Helm"
    ]
    planned = with_live_replicas(plan, deployments)
    reasons = [f"{name} changes" for name, entry in sorted(planned.items()) if entry["changed"]]
    reasons += [f"{item['service']} is pending" for item in interrupted_releases(releases, namespace, context)]
    missing = sorted(set(needed_secrets or []) - set(state.get("secret_names") or []))
    reasons += [f"Secret {name} is missing" for name in missing]
    sets = namespace_state({"items": items})["sets"]
    if not same_set(live_services(releases), sets[-1] if sets else None):
        reasons.append("the live release set is not recorded")
    return reasons


# A container that waits with one of these reasons cannot start: its pod will not become Ready.
FAILING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
)


def pods_failing(listing: dict | str, releases: list[str]) -> dict[str, str]:
    """{release: "pod P in CrashLoopBackOff"} for each of ``releases`` (app.kubernetes.io/instance)
    with a pod that is not being deleted and has a container waiting for a reason in FAILING_REASONS,
    from one `kubectl get pods -o json`."""
    out = {}
    for pod in _items(listing):
        metadata = pod.get("metadata") or {}
        release = (metadata.get("labels") or {}).get("app.kubernetes.io/instance")
        if release not in releases or release in out or metadata.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            reason = ((container.get("state") or {}).get("waiting") or {}).get("reason", "")
            if reason in FAILING_REASONS:
                out[release] = f"pod {metadata.get('name', '')} in {reason}"
                break
    return out
