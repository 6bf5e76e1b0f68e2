"""A monitored environment of its own for tests/e2e/test_monitoring.py and bench/bench_monitoring.py:
the local inventory copied under a temporary folder, its podman hosts renamed and every server on
ports of its own (a `make up` environment is left alone), and an inventory overlay with short
scrape and evaluation intervals and receivers that point at the local stand-ins
(tests/e2e/notification_sinks.py). The roles are the ones operators run; only the inventory differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.helpers import REPO, test_vault_password, toolchain_env

PREFIX = "openpolicy-e2e-mon"
HOSTS = {"db": f"{PREFIX}-db1", "backup": f"{PREFIX}-backup1", "monitoring": f"{PREFIX}-monitoring1"}
# SSH ports of those hosts, clear of the local inventory's (52201-52203) and the other e2e modules'.
SSH_PORTS = {"52201": "52221", "52202": "52222", "52203": "52223"}
PROMETHEUS_PORT = 59890
ALERTMANAGER_PORT = 59893
SINK_HTTP_PORT = 59895
SINK_SMTP_PORT = 59896
# The intervals the alerts are measured with (the bench reports them).
INTERVALS = {"scrape": "2s", "evaluation": "2s", "group_wait": "1s", "group_interval": "2s"}
# The tests' copy of monitoring/rules waits this long (`for:`) before any alert fires, instead of
# the minutes operators get: the expressions are the shipped ones, the alerts fire within seconds.
TEST_RULE_FOR = "4s"
OVERLAY = {
    "podman_hosts_environment": "e2e-monitoring",
    # Servers of the db and backup hosts, clear of `make up` and the other e2e modules.
    "postgresql_port": 59832,
    "redis_port": 59879,
    "pgbackrest_tls_server_port": "{{ 59841 if inventory_hostname in groups['backup'] else 59840 }}",
    "pgbackrest_scratch_port": 59833,
    "prometheus_port": PROMETHEUS_PORT,
    "prometheus_scrape_interval": INTERVALS["scrape"],
    "prometheus_scrape_timeout": INTERVALS["scrape"],
    "prometheus_evaluation_interval": INTERVALS["evaluation"],
    "alertmanager_port": ALERTMANAGER_PORT,
    "alertmanager_group_wait": INTERVALS["group_wait"],
    "alertmanager_group_interval": INTERVALS["group_interval"],
    "alertmanager_repeat_interval": "1h",
    "node_exporter_port": (
        "{{ 59802 if inventory_hostname in groups['monitoring'] else 59801 if inventory_hostname in groups['backup']"
        " else 59800 }}"
    ),
    "postgres_exporter_port": 59887,
    "redis_exporter_port": 59821,
    "host_logs_collector_port": 59932,
    # Production's receivers and routes, pointed at the stand-ins.
    "alertmanager_receivers": [
        {"name": "pagerduty-oncall", "type": "pagerduty", "routing_key": "e2e0stand0in0routing0key00000000",
         "url": f"http://127.0.0.1:{SINK_HTTP_PORT}/v2/enqueue"},
        {"name": "slack-alerts", "type": "slack", "channel": "#openpolicy-e2e",
         "api_url": f"http://127.0.0.1:{SINK_HTTP_PORT}/slack/T000/B000/stand-in"},
        {"name": "email-ops", "type": "email", "to": "ops@openpolicy.example"},
        {"name": "webhook", "type": "webhook", "url": f"http://127.0.0.1:{SINK_HTTP_PORT}/webhook"},
    ],
    "alertmanager_default_receiver": "webhook",
    "alertmanager_routes": [
        {"receiver": "pagerduty-oncall", "matchers": ['severity="critical"'], "continue": True},
        {"receiver": "email-ops", "matchers": ['severity="critical"'], "continue": True},
        {"receiver": "slack-alerts", "matchers": ['severity="critical"']},
        {"receiver": "slack-alerts", "matchers": ['severity="warning"']},
    ],
    "alertmanager_smtp": {"smarthost": f"127.0.0.1:{SINK_SMTP_PORT}", "from": "alertmanager@openpolicy.example",
                          "auth_username": "", "auth_password": "", "require_tls": False},
}  # fmt: skip
PLAYBOOKS = ["provision_hosts.yml", "provision_databases.yml", "provision_backups.yml", "provision_monitoring.yml"]


@contextlib.contextmanager
def hosts_lock() -> Iterator[None]:
    """The lock tests/e2e/conftest.py takes around test_monitoring: the bench takes it too, for it
    makes the same hosts on the same ports (and removes them when it is done)."""
    with (Path(tempfile.gettempdir()) / "openpolicy-e2e-test_monitoring.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class MonitoringEnv:
    def __init__(self, root: Path, rule_for: str | None = None):
        """rule_for: load a copy of monitoring/rules whose every `for:` is this (the rule files are
        the checkout's by extra-vars, playbooks/group_vars/all/monitoring.yml; so is the copy)."""
        self.root = root
        self.inventory = root / "inventories" / "e2e"
        shutil.copytree(
            REPO / "inventories" / "local", self.inventory, ignore=shutil.ignore_patterns("credentials", "vault.yml")
        )
        hosts = self.inventory / "hosts.yml"
        text = hosts.read_text()
        for group, name in HOSTS.items():
            text = text.replace(f"openpolicy-local-{group}1", name)
        for local, own in SSH_PORTS.items():
            text = text.replace(f"ansible_port: {local}", f"ansible_port: {own}")
        hosts.write_text(text)
        (self.inventory / "group_vars" / "all" / "zz_e2e_monitoring.yml").write_text(
            "---\n# The e2e overlay of tests/e2e/monitoring_env.py.\n" + yaml.safe_dump(OVERLAY, sort_keys=False)
        )
        self.extra = {"secrets_vault_file": str(root / "vault.yml")}
        if rule_for:
            rules = root / "rules"
            rules.mkdir()
            for path in (REPO / "monitoring" / "rules").glob("*.yml"):
                text = re.sub(r"^(\s+for: ).*$", rf"\g<1>{rule_for}", path.read_text(), flags=re.MULTILINE)
                (rules / path.name).write_text(text)
            self.extra["prometheus_rules_source_dir"] = str(rules)

    @classmethod
    def existing(cls, root: Path) -> MonitoringEnv:
        """The environment a run left under root: bench/bench_monitoring.py --keep, or
        tests/e2e/test_monitoring.py with OPENPOLICY_E2E_KEEP_MONITORING=1 (it prints root)."""
        env = cls.__new__(cls)
        env.root = root
        env.inventory = root / "inventories" / "e2e"
        env.extra = {"secrets_vault_file": str(root / "vault.yml")}
        if (root / "rules").is_dir():
            env.extra["prometheus_rules_source_dir"] = str(root / "rules")
        return env

    @property
    def rules_dir(self) -> Path:
        """The rule files this environment's Prometheus loads."""
        return Path(self.extra.get("prometheus_rules_source_dir", REPO / "monitoring" / "rules"))

    def play(self, *playbooks: str, **extra) -> subprocess.CompletedProcess:
        cmd = ["ansible-playbook", "-i", str(self.inventory), *(f"playbooks/{p}" for p in playbooks)]
        cmd += ["--vault-password-file", str(test_vault_password()), "-e", json.dumps({**self.extra, **extra})]
        env = toolchain_env()
        env.pop("ANSIBLE_VAULT_IDENTITY_LIST", None)
        return subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=2400, check=False)

    def up(self) -> subprocess.CompletedProcess:
        return self.play(*PLAYBOOKS)

    def down(self) -> None:
        subprocess.run(
            ["podman", "rm", "--force", "--time", "5", *HOSTS.values()],
            env=toolchain_env(),
            capture_output=True,
            check=False,
        )

    @staticmethod
    def exec(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["podman", "exec", HOSTS[host], *argv], env=toolchain_env(), text=True, capture_output=True, check=check
        )

    @staticmethod
    def api(path: str, port: int = PROMETHEUS_PORT, **params: str) -> dict:
        url = f"http://127.0.0.1:{port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def query(self, expr: str) -> list[dict]:
        return self.api("/api/v1/query", query=expr)["data"]["result"]

    def alert_states(self, name: str) -> set[str]:
        return {a["state"] for a in self.api("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name}

    def wait(self, predicate, timeout: float, step: float = 1.0):
        deadline = time.time() + timeout
        while True:
            value = predicate()
            if value or time.time() > deadline:
                return value
            time.sleep(step)

    def rss_kib(self, *processes: str) -> dict[str, int]:
        """Resident memory (VmRSS, KiB) of the named programs on the monitoring host, summed by name."""
        script = (
            "import pathlib,sys,json\n"
            "out={n:0 for n in sys.argv[1:]}\n"
            "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
            "    try:\n"
            "        name=(p/'cmdline').read_bytes().split(b'\\0')[0].decode().rsplit('/',1)[-1]\n"
            "        status=(p/'status').read_text()\n"
            "    except OSError: continue\n"
            "    if name in out:\n"
            "        out[name]+=int(next((l.split()[1] for l in status.splitlines() if l.startswith('VmRSS:')),0))\n"
            "print(json.dumps(out))\n"
        )
        return json.loads(self.exec("monitoring", "python3", "-c", script, *processes).stdout)
