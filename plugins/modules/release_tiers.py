#!/usr/bin/python
"""Install or upgrade the releases tier by tier, each tier's at once, watching their pods through one watch."""

from __future__ import annotations

DOCUMENTATION = r"""
module: release_tiers
short_description: Install or upgrade releases tier by tier, a tier's all at once; stop an upgrade whose pods fail
description:
  - "Runs the releases tier by tier in the order of O(tier_order): a tier starts the moment the
    one before has ended with every release deployed; after a tier with a failed release, no
    later tier starts (its releases are returned in C(not_started)). One call for every tier:
    each tier of its own (an include, this module's start and the tasks after it, once per tier)
    cost the deploy some 0.3 s between two tiers."
  - "Starts one C(helm upgrade --install --wait=watcher --rollback-on-failure) per release of a
    tier, all at once (at most O(parallel), the next as one ends), each with its values on stdin and the labels
    a deploy records (module_utils/release_state.py digest_labels). Helm stays the authority on
    the release's state: it marks a revision that did not become Ready failed and returns the
    release to the revision that served."
  - "Meanwhile one watch of the namespace's pods (one C(kubectl get pods --watch) for every
    tier, its events kept in memory and looked at every O(interval)) looks for pods of a release that
    cannot start: a container waiting in CrashLoopBackOff,
    ImagePullBackOff, ErrImagePull, CreateContainerConfigError, CreateContainerError or
    InvalidImageName. When a release's pods stay so for O(failure_grace) seconds, its Helm is sent
    SIGTERM: Helm then fails the revision and rolls back at once, instead of at its timeout."
  - "Never fails itself: each release's result says how its Helm ended (the playbook names the
    failure in one line). An API server that stops answering is Helm's error to report."
options:
  namespace: {description: Namespace of the releases., type: str, required: true}
  kubeconfig: {description: Kubeconfig of the cluster., type: path, required: true}
  context: {description: Context of the kubeconfig (empty for its current one)., type: str, default: ""}
  chart: {description: Path of the chart every release is installed from., type: str, required: true}
  releases:
    description: "The releases: [{name, tier, values, labels}]."
    type: list
    elements: dict
    required: true
  tier_order:
    description: The tiers in the order they deploy; empty is one tier of every release.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds Helm waits for a release to be Ready (its hooks included) before it rolls back.
    type: int
    default: 300
  history_max:
    description: Revisions Helm keeps per release.
    type: int
    default: 10
  parallel:
    description: >-
      Most Helms that run at once, the others starting in order as each ends; 0 is four per CPU
      core of this machine. Each Helm spends some 0.3 CPU-s here, and past what the cores take
      at once each only takes longer: fifty of bench/bench_scale.py's releases on two cores took
      19.5 s in a `xargs -P 50` loop and 14.4 s ten at a time, deploy.yml 20.4 s all at once and
      18.6 s eight at a time. A tier of the platform (six at most) starts at once.
    type: int
    default: 0
  failure_grace:
    description: >-
      Seconds a release's pods stay unable to start before its upgrade is stopped, and seconds
      the API server may not answer the pod watch before every running upgrade is stopped (Helm
      waiting on a hook would wait out its timeout); 0 leaves both to Helm's timeout.
    type: int
    default: 15
  interval:
    description: Seconds between two looks at the watched pods.
    type: float
    default: 1.0
  binary:
    description: The helm program.
    type: str
    default: helm
  kubectl:
    description: The kubectl program.
    type: str
    default: kubectl
author: openpolicy-deploy maintainers
"""

EXAMPLES = r"""
- name: Deploy the core tier, then the gateway
  openpolicy.deploy.release_tiers:
    namespace: openpolicy-local
    kubeconfig: .local/kubeconfig
    chart: charts/openpolicy-service
    tier_order: [core, edge]
    releases:
      - {name: auth-service, tier: core, values: {replicaCount: 1}, labels: {}}
      - {name: api-gateway, tier: edge, values: {replicaCount: 1}, labels: {}}
  register: tiers
"""

RETURN = r"""
releases:
  description: "{name: {rc, stdout, stderr, msg, stopped, seconds}}: how each started release's
    Helm ended; C(stopped) is why the watch stopped it (empty when Helm ended by itself)."
  returned: always
  type: dict
not_started:
  description: The releases of the tiers after a tier with a failed release, which were not started.
  returned: always
  type: list
"""

import json  # noqa: E402 - after the documentation, as Ansible modules are laid out
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.openpolicy.deploy.plugins.module_utils import release_state  # noqa: E402


def upgrade_command(params: dict, release: dict) -> list[str]:
    labels = ",".join(f"{key}={value}" for key, value in sorted((release.get("labels") or {}).items()))
    command = [
        params["binary"],
        "upgrade",
        "--install",
        release["name"],
        params["chart"],
        f"--namespace={params['namespace']}",
        f"--kubeconfig={params['kubeconfig']}",
    ]
    command += [f"--kube-context={params['context']}"] if params["context"] else []
    command += [
        "--reset-values",
        "--values=-",
        "--wait=watcher",
        "--rollback-on-failure",
        # Helm 4 applies server-side: once an HPA has written .spec.replicas (through the scale
        # subresource) an upgrade, and the rollback on its failure, would stop on that field's
        # conflict. The chart renders the live count under an HPA, so forcing takes nothing from
        # it (Helm 3's three-way merge did the same).
        "--force-conflicts",
        # Helm's own check of the rendered objects against the cluster's OpenAPI schema fetched
        # and parsed that schema in every helm process: about 0.3 CPU-s of each release's 0.45.
        # The API server checks every object of a server-side apply strictly anyway (an unknown
        # field fails the release with the same error), and the chart tests check the chart's
        # output against the Kubernetes schema (tests/charts/k8s_schema.py).
        "--disable-openapi-validation",
        f"--timeout={params['timeout']}s",
        f"--history-max={params['history_max']}",
    ]
    return command + ([f"--labels={labels}"] if labels else [])


# The tier's Helms run side by side and short of CPU (two cores: some 0.45 CPU-s each, most of
# the tier's time). At Go's default GOGC=100 a Helm spent about a fifth of that in its garbage
# collector; at 400 it collects a quarter as often: 0.32 CPU-s against 0.40, for at most 110 MB
# of memory against 75 MB (the service chart's install). An operator's own GOGC is kept.
HELM_GOGC = "400"


def helm_environment() -> dict[str, str]:
    return {**os.environ, "GOGC": os.environ.get("GOGC") or HELM_GOGC}


class Upgrade:
    """One release's Helm, run in the background with its values on stdin."""

    def __init__(self, command: list[str], values: dict, ended: threading.Event):
        self.started = time.monotonic()
        self.done = False
        self.ended_event = ended
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=helm_environment(),
        )
        self.output = ("", "")
        self.stopped = ""
        self.ended = 0.0
        self.reader = threading.Thread(target=self._communicate, args=(json.dumps(values),), daemon=True)
        self.reader.start()

    def _communicate(self, values: str) -> None:
        self.output = self.process.communicate(values)
        self.ended = time.monotonic()
        self.done = True
        self.ended_event.set()

    def running(self) -> bool:
        return not self.done

    def stop(self, why: str) -> None:
        if not self.stopped and self.process.poll() is None:
            self.stopped = why
            self.process.send_signal(signal.SIGTERM)

    def result(self) -> dict:
        stdout, stderr = self.output
        return {
            "rc": self.process.returncode,
            "stdout": stdout,
            "stderr": stderr,
            "msg": " ".join(stderr.split())[-1000:],
            "stopped": self.stopped,
            "seconds": round(self.ended - self.started, 1),
        }


# kubectl's words for an API server that did not answer, as opposed to one that refused the
# request (a watch the deployer's role may not make must not stop a deploy).
# (kubectl 1.36: "The connection to the server 127.0.0.1:32764 was refused - did you specify
# the right host or port?"; a watch whose server goes away ends with status 0 and nothing said.)
UNREACHABLE = re.compile(
    r"connection to the server \S+ was refused|connection refused|no route to host|i/o timeout|"
    r"connection reset|unexpected EOF|TLS handshake timeout|Unable to connect to the server",
    re.IGNORECASE,
)
# A watch that has stayed up this long is connected, even if no pod has shown yet.
WATCH_CONNECTED_AFTER = 2.0


class PodWatch:
    """One `kubectl get pods --watch` of the tier's releases, for the whole tier: the pods as the
    API server's last event described them. A poll started a kubectl every second, each some
    0.1 CPU-s, while the tier's Helms were short of CPU. A watch that ends (the API server closed
    it) is started again; the watch only ever shortens a wait, so one that cannot start is no error.

    It also tells how long the API server has not answered (unreachable_for): Helm waiting on a
    hook does not fail when the server goes, it waits out its timeout (a deploy whose
    kube-apiserver was killed during a migration hook ended 145 s later, with a 120 s timeout).
    Only a watch that fails at once counts (connection refused): one whose connection hangs
    stays up, counts as connected after WATCH_CONNECTED_AFTER, and leaves Helm to its timeout.
    """

    def __init__(self, command: list[str]):
        self.command = command
        self.pods: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.unreachable_since: float | None = None
        self.closed = False
        self.reader = threading.Thread(target=self._watch, daemon=True)
        self.reader.start()

    def _watch(self) -> None:
        while not self.closed:
            with tempfile.TemporaryFile(mode="w+") as errors:
                # Started under the lock close() takes: no watch starts once the tier is done.
                with self.lock:
                    if self.closed:
                        return
                    try:
                        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=errors, text=True)
                    except OSError:
                        return
                    self.started_at = time.monotonic()
                    self.pods = {}  # the new watch lists every pod again
                self._read(self.process.stdout)
                failed = self.process.wait() != 0
                errors.seek(0)
                if failed and UNREACHABLE.search(errors.read()):
                    with self.lock:
                        self.unreachable_since = self.unreachable_since or time.monotonic()
            if not self.closed:
                time.sleep(1.0)

    def _read(self, stream) -> None:
        # One event per line: {"type": ADDED|MODIFIED|DELETED, "object": pod}.
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            pod = event.get("object") or {}
            name = (pod.get("metadata") or {}).get("name")
            with self.lock:
                self.unreachable_since = None
                if name and event.get("type") == "DELETED":
                    self.pods.pop(name, None)
                elif name:
                    self.pods[name] = pod

    def listing(self) -> dict:
        with self.lock:
            return {"items": list(self.pods.values())}

    def unreachable_for(self) -> float:
        """Seconds since a watch first ended with the API server not answering, while no watch
        since has read an event or stayed up for WATCH_CONNECTED_AFTER; 0 when it answers."""
        with self.lock:
            if self.unreachable_since is None:
                return 0.0
            now = time.monotonic()
            running = self.process is not None and self.process.poll() is None
            if running and now - self.started_at > WATCH_CONNECTED_AFTER:
                self.unreachable_since = None
                return 0.0
            return now - self.unreachable_since

    def close(self) -> None:
        with self.lock:
            self.closed = True
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait()


class Tier:
    """The tier's Helms: started in order, at most `parallel` at once (see the option)."""

    def __init__(self, params: dict, releases: list[dict]):
        self.params = params
        self.parallel = params["parallel"] or 4 * (os.cpu_count() or 1)
        self.waiting = list(releases)
        self.upgrades: dict[str, Upgrade] = {}
        self.ended = threading.Event()
        self.start_more()

    def start_more(self) -> None:
        running = sum(upgrade.running() for upgrade in self.upgrades.values())
        while self.waiting and running < self.parallel:
            release = self.waiting.pop(0)
            command = upgrade_command(self.params, release)
            self.upgrades[release["name"]] = Upgrade(command, release.get("values") or {}, self.ended)
            running += 1

    def wait(self) -> bool:
        """Up to the interval, less when a Helm ends: whether a release is still to end.

        The tier is done the moment its last Helm ends, not at the next tick of the poll, and a
        Helm that ends makes room for the next release at once.
        """
        self.ended.wait(self.params["interval"])
        self.ended.clear()
        self.start_more()
        return bool(self.waiting) or any(upgrade.running() for upgrade in self.upgrades.values())


def run_tier(tier: Tier, watch: PodWatch | None, params: dict) -> None:
    """Until the tier's last Helm ends: stop the upgrade of a release whose pods cannot start."""
    failing_since: dict[str, float] = {}
    while tier.wait():
        if watch is None:
            continue
        now = time.monotonic()
        unreachable = watch.unreachable_for()
        if unreachable >= params["failure_grace"]:
            for upgrade in tier.upgrades.values():
                upgrade.stop(
                    f"the API server did not answer for {unreachable:.0f} s, stopped before Helm's "
                    f"{params['timeout']} s timeout"
                )
            continue
        failing = release_state.pods_failing(watch.listing(), list(tier.upgrades))
        for name, upgrade in tier.upgrades.items():
            if name not in failing or not upgrade.running():
                failing_since.pop(name, None)
                continue
            since = failing_since.setdefault(name, now)
            if now - since >= params["failure_grace"]:
                upgrade.stop(
                    f"{failing[name]} for {now - since:.0f} s, stopped before Helm's {params['timeout']} s timeout"
                )
    for upgrade in tier.upgrades.values():
        upgrade.reader.join()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **release_state.CLUSTER_OPTIONS,
            "chart": {"type": "str", "required": True},
            "releases": {"type": "list", "elements": "dict", "required": True},
            "tier_order": {"type": "list", "elements": "str", "default": []},
            "timeout": {"type": "int", "default": 300},
            "history_max": {"type": "int", "default": 10},
            "parallel": {"type": "int", "default": 0},
            "failure_grace": {"type": "int", "default": 15},
            "interval": {"type": "float", "default": 1.0},
            "binary": {"type": "str", "default": "helm"},
            "kubectl": {"type": "str", "default": "kubectl"},
        },
        supports_check_mode=False,
    )
    params = module.params
    releases = params["releases"]
    if not releases:
        module.exit_json(changed=False, releases={}, not_started=[])
    if params["parallel"] < 0:
        module.fail_json(msg=f"parallel: expected 0 (four per CPU core) or more, got {params['parallel']}")
    order = params["tier_order"]
    for release in releases:
        if order and release.get("tier") not in order:
            module.fail_json(msg=f"release {release['name']}: tier {release.get('tier')!r} is not one of {order}")
    tiers = [[r for r in releases if r.get("tier") == tier] for tier in order] if order else [releases]
    names = sorted(release["name"] for release in releases)
    selector = f"app.kubernetes.io/instance in ({','.join(names)})"
    watch_command = [
        *release_state.cli_prefix(params, params["kubectl"]),
        "get",
        "pods",
        "--selector",
        selector,
        "--watch",
        "--output-watch-events",
        "-o",
        "json",
    ]
    watch = PodWatch(watch_command) if params["failure_grace"] > 0 else None
    results: dict[str, dict] = {}
    not_started: list[str] = []
    try:
        for tier_releases in tiers:
            if not tier_releases:
                continue
            if any(result["rc"] != 0 for result in results.values()):
                not_started += [release["name"] for release in tier_releases]
                continue
            tier = Tier(params, tier_releases)
            run_tier(tier, watch, params)
            results.update({name: upgrade.result() for name, upgrade in tier.upgrades.items()})
    finally:
        if watch is not None:
            watch.close()
    module.exit_json(changed=bool(results), releases=results, not_started=not_started)


if __name__ == "__main__":
    main()
