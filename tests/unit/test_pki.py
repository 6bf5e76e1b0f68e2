"""One PKI for the data tier (roles/pki): no other role makes a CA or signs a certificate, and
the role's entry point `certificate`, run for real against two local hosts, issues, keeps,
renews and refuses as its README says."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, failure_messages, recap, toolchain_env

ROLES = REPO / "roles"
# community.crypto modules that make or sign certificates: roles/pki's alone.
SIGNING = re.compile(
    r"community\.crypto\.(x509_certificate\b|x509_certificate_pipe|openssl_csr)|provider:\s*(selfsigned|ownca)"
)
CONSUMERS = {"postgresql": "tls.yml", "pgbackrest": "tls.yml", "etcd_cluster": "tls.yml"}


def test_no_role_but_pki_makes_a_ca_or_signs():
    found = [
        f"{path.relative_to(ROLES)}: {match.group(0)}"
        for path in sorted(ROLES.rglob("*.yml"))
        if path.relative_to(ROLES).parts[0] != "pki"
        for match in SIGNING.finditer(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize("role", sorted(CONSUMERS))
def test_every_tls_role_takes_its_certificates_from_pki(role):
    text = (ROLES / role / "tasks" / CONSUMERS[role]).read_text()
    assert re.search(r"include_role:\s*\n\s*name: pki\s*\n\s*tasks_from: certificate", text), role
    assert "pki_issued" in text


HOSTS = {
    "all": {
        "hosts": {
            name: {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
            for name in ("a", "b")
        }
    }
}
PLAY = [
    {
        "hosts": "all",
        "gather_facts": False,
        "tasks": [
            {
                "name": "Issue the host's certificate",
                "ansible.builtin.include_role": {"name": "pki", "tasks_from": "certificate"},
                "vars": {
                    "pki_certificate_name": "web",
                    "pki_certificate_subject_alt_names": "{{ [inventory_hostname ~ '.example', '10.0.0.1'] + names }}",
                    "pki_certificate_usages": ["serverAuth", "clientAuth"],
                },
            },
            {
                "name": "Show the files",
                "ansible.builtin.debug": {
                    "msg": "ISSUED {{ pki_issued.web.values() | map('relpath', inventory_dir) | join(' ') }}"
                },
            },
        ],
    }
]


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], text=True, capture_output=True, check=True).stdout


def run(tmp: Path, **extra) -> subprocess.CompletedProcess:
    extra.setdefault("names", [])
    return subprocess.run(
        ["ansible-playbook", "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml"), "-e", json.dumps(extra)],
        cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=600, check=False,
    )  # fmt: skip


def test_certificates_issued_kept_renewed_and_bad_input_refused(tmp_path):
    (tmp_path / "hosts.yml").write_text(json.dumps(HOSTS))
    (tmp_path / "play.yml").write_text(json.dumps(PLAY))
    pki = tmp_path / "credentials" / "pki"

    first = run(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert oct(pki.stat().st_mode & 0o777) == "0o700"
    # The fact pki_issued names the control-host files of each host's certificate.
    for host in ("a", "b"):
        assert (
            f"ISSUED credentials/pki/{host}-web.crt credentials/pki/{host}-web.key credentials/pki/trust.crt"
            in first.stdout
        )
    for host in ("a", "b"):
        text = openssl("x509", "-noout", "-text", "-in", str(pki / f"{host}-web.crt"))
        assert f"DNS:{host}.example" in text and "IP Address:10.0.0.1" in text
        assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
        openssl("verify", "-CAfile", str(pki / "trust.crt"), str(pki / f"{host}-web.crt"))
    ca = (pki / "ca.crt").read_text()
    serial = openssl("x509", "-noout", "-serial", "-in", str(pki / "a-web.crt"))

    second = run(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert {host: counts["changed"] for host, counts in recap(second).items()} == {"a": 0, "b": 0}

    # Within the renewal margin (the 825-day certificates expire within 900 days) and with a
    # new name: issued again, from the same CA, the key kept. A CA expiring within
    # pki_ca_warn_days gives its one warning line.
    key = (pki / "a-web.key").read_text()
    # A retired CA in trusted/ (a rollover's old one) goes into what the hosts trust.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=old", "-keyout", str(tmp_path / "old.key"), "-out", str(pki / "trusted" / "old.crt"),
         "-days", "10"],
        capture_output=True, check=True,
    )  # fmt: skip
    third = run(
        tmp_path, pki_renew_days=900, pki_valid_days=1000, pki_ca_warn_days=4000, pki_ca_valid_days=5000,
        names=["web.example"],
    )  # fmt: skip
    assert third.returncode == 0, third.stdout[-3000:]
    assert openssl("x509", "-noout", "-serial", "-in", str(pki / "a-web.crt")) != serial
    assert "DNS:web.example" in openssl("x509", "-noout", "-text", "-in", str(pki / "a-web.crt"))
    assert (pki / "a-web.key").read_text() == key and (pki / "ca.crt").read_text() == ca
    trust = (pki / "trust.crt").read_text()
    assert trust.count("BEGIN CERTIFICATE") == 2 and ca.strip() in trust
    assert (pki / "trusted" / "old.crt").read_text().strip() in trust
    assert "pki_ca_warn_days (4000): renew it, see docs/runbooks/certificate-renewal.md" in third.stdout

    # A CA that expires before a renewed certificate would stops the run, naming the runbook;
    # a negative margin is refused in one line; neither touches a file.
    before = {path.name: path.read_bytes() for path in pki.glob("*") if path.is_file()}
    stop = run(tmp_path, pki_renew_days=4000, pki_valid_days=5000, pki_ca_warn_days=4000, pki_ca_valid_days=6000)
    assert stop.returncode != 0
    assert any("within pki_renew_days (4000): renew it first, see docs/runbooks/certificate-renewal.md" in m
               for m in failure_messages(stop)), stop.stdout[-3000:]  # fmt: skip
    bad = run(tmp_path, pki_renew_days=-1)
    assert bad.returncode != 0
    assert "pki_renew_days: expected a number of days >= 0, got -1" in failure_messages(bad), bad.stdout[-3000:]
    assert {path.name: path.read_bytes() for path in pki.glob("*") if path.is_file()} == before
