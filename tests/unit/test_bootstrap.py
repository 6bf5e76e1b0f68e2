"""The pinned toolchain: one place for versions, and a bootstrap that is idempotent."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import yaml

import bootstrap
from openpolicy_tools import pins
from tests.helpers import REPO, toolchain_env


def test_versions_file_pins_exact_versions():
    versions = pins.load_versions()
    tables = {name: versions[name] for name in ("python", "python_transitive", "go")}
    tables |= {f"tool_venvs_transitive.{n}": t for n, t in versions["tool_venvs_transitive"].items()}
    for table, pinned in tables.items():
        for name, version in pinned.items():
            assert version[0].isdigit() or version.startswith("v"), f"{table}.{name} = {version!r} is not exact"
            assert not any(c in version for c in "<>=~*^"), f"{table}.{name} = {version!r} is a range"


# --- Every package of the venvs pinned, direct or transitive ------------------------------------


def canonical(name: str) -> str:
    """PyYAML and pyyaml, ruamel.yaml and ruamel-yaml, molecule-plugins[podman] and
    molecule-plugins: one spelling per package, as pip compares them."""
    return re.sub(r"[-_.]+", "-", name.partition("[")[0]).lower()


def venv_pins(venv: str) -> tuple[Path, dict[str, str]]:
    """The folder of a venv the bootstrap builds, and what versions.toml pins in it."""
    versions = pins.load_versions()
    if venv == "main":
        pinned = {**versions["python"], **versions["python_transitive"]}
        return REPO / ".toolchain" / "venv", {canonical(n): v for n, v in pinned.items()}
    pinned = {venv: versions["tool_venvs"][venv], **versions["tool_venvs_transitive"][venv]}
    return bootstrap.tool_venv_folder(venv, versions), {canonical(n): v for n, v in pinned.items()}


# The venv's own installers, from Python's ensurepip: they come with the interpreter, not with pip.
VENV_OWN = {"pip", "setuptools"}


@pytest.mark.parametrize("venv", ["main", *pins.load_versions()["tool_venvs"]])
def test_every_package_of_the_venv_is_pinned_at_its_installed_version(venv):
    """A package that versions.toml does not pin floats: a fresh machine gets whatever release
    is newest that day (cryptography 51 put a warning on every ansible command)."""
    folder, pinned = venv_pins(venv)
    site_packages = list(folder.glob("lib/python*/site-packages"))
    assert site_packages, f"no venv at {folder}: run `make bootstrap`"
    installed = {
        canonical(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=[str(p) for p in site_packages])
    }
    wrong = [
        f"{name}: installed {version}, versions.toml pins {pinned[name]}"
        if name in pinned
        else f"{name}: installed {version}, not pinned in versions.toml"
        for name, version in sorted(installed.items())
        if name not in VENV_OWN and pinned.get(name) != version
    ]
    assert not wrong, f"{venv} venv ({folder}):\n" + "\n".join(wrong)
    assert len(installed) > 10, installed


def test_direct_and_transitive_pins_name_different_packages():
    """A package in both would be a requirement and a constraint at once: two places to bump."""
    versions = pins.load_versions()
    assert {canonical(n) for n in versions["python"]}.isdisjoint(map(canonical, versions["python_transitive"]))
    for name, transitive in versions["tool_venvs_transitive"].items():
        assert canonical(name) not in map(canonical, transitive), name


def test_changing_a_transitive_pin_builds_a_new_venv():
    versions = pins.load_versions()
    changed = copy.deepcopy(versions)
    changed["python_transitive"]["cryptography"] = "51.0.1"
    changed["tool_venvs_transitive"]["checkov"]["pyyaml"] = "6.0.3"
    assert bootstrap.venv_folder(changed) != bootstrap.venv_folder(versions)
    assert bootstrap.tool_venv_folder("checkov", changed) != bootstrap.tool_venv_folder("checkov", versions)
    assert bootstrap.tool_venv_folder("checkov", changed).name.startswith("checkov-3.3.30-")
    assert bootstrap.venv_folder(copy.deepcopy(versions)) == bootstrap.venv_folder(versions)


def test_a_tool_venv_without_its_dependencies_pins_is_named_in_one_line():
    versions = copy.deepcopy(pins.load_versions())
    versions["tool_venvs"]["newtool"] = "1.0.0"
    missing = r"\[tool_venvs\] newtool has no \[tool_venvs_transitive.newtool\]"
    with pytest.raises(bootstrap.BootstrapError, match=missing):
        bootstrap.tool_venv_folder("newtool", versions)


def test_list_names_a_tool_venv_without_its_pins_in_one_line(monkeypatch, capsys):
    versions = copy.deepcopy(pins.load_versions())
    versions["tool_venvs"]["newtool"] = "1.0.0"
    monkeypatch.setattr(bootstrap, "load_versions", lambda: versions)
    assert bootstrap.main(["--list"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("bootstrap: --list: versions.toml: [tool_venvs] newtool has no") and error.count("\n") == 1


def test_ansible_writes_nothing_to_stderr():
    """A warning printed on every ansible command (as cryptography 51's about DSA was) hides the
    one warning that matters among them."""
    result = subprocess.run(
        ["ansible-playbook", "--version"], cwd=REPO, env=toolchain_env(), text=True, capture_output=True, check=True
    )
    assert result.stderr == "", result.stderr


def test_requirements_pin_every_collection_exactly_and_kubernetes_core_fits_helm4():
    data = yaml.safe_load((REPO / "requirements.yml").read_text())
    collections = {c["name"]: c["version"] for c in data["collections"]}
    assert all(str(v)[0].isdigit() for v in collections.values()), collections
    major, minor, _ = (int(p) for p in collections["kubernetes.core"].split("."))
    assert (major, minor) >= (6, 5), "Helm 4 needs kubernetes.core >= 6.5.0"
    assert pins.load_versions()["go"]["helm"].startswith("v4.")


def test_installed_collections_match_requirements():
    data = yaml.safe_load((REPO / "requirements.yml").read_text())
    root = REPO / ".toolchain" / "collections" / "ansible_collections"
    for collection in data["collections"]:
        namespace, name = collection["name"].split(".")
        manifest = yaml.safe_load((root / namespace / name / "MANIFEST.json").read_text())
        assert manifest["collection_info"]["version"] == collection["version"], collection["name"]


def test_ansible_loads_the_pinned_kubernetes_core():
    """The venv's ansible package bundles an older kubernetes.core: the pinned copy must win."""
    result = subprocess.run(
        ["ansible-doc", "-j", "kubernetes.core.helm"],
        cwd=REPO,
        env=toolchain_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    module = json.loads(result.stdout)["kubernetes.core.helm"]["doc"]["filename"]
    assert module.startswith(str(REPO / ".toolchain" / "collections")), module
    manifest = Path(module).parents[2] / "MANIFEST.json"
    assert json.loads(manifest.read_text())["collection_info"]["version"] == "6.6.0"


def test_the_default_strategy_leaves_every_cpu_to_the_tasks(tmp_path):
    """Mitogen pins its workers (and what they start) to one core; ansible.cfg's strategy does not."""
    playbook = tmp_path / "affinity.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n"
        "  vars: {ansible_python_interpreter: '{{ ansible_playbook_python }}'}\n  tasks:\n"
        "    - ansible.builtin.command: python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))'\n"
        "      register: cpus\n      changed_when: false\n"
        "    - ansible.builtin.debug: {msg: 'CPUS {{ cpus.stdout }}'}\n"
    )
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook)],
        cwd=REPO,
        env=toolchain_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    assert "mitogen_linear_unpinned" in (REPO / "ansible.cfg").read_text()
    assert f"CPUS {sorted(os.sched_getaffinity(0))}" in result.stdout, result.stdout


# Controller-side tasks of every kind the default strategy runs in its own process (loops,
# delegated facts, a failure and its rescue, includes, groups and hosts added at run time), and
# module tasks beside them, one skipped and one run: on the play's one host, in the controller's
# process too. The second play's module task has two hosts: a worker each.
IN_PROCESS_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
  tasks:
    - ansible.builtin.set_fact:
        total: "{{ (total | default(0) | int) + item }}"
        runner: "{{ lookup('ansible.builtin.pipe', 'echo $PPID') }}"
      loop: [1, 2, 3]
    - ansible.builtin.set_fact: {given: handed over}
      delegate_to: other
      delegate_facts: true
    - ansible.builtin.add_host: {name: added, groups: [late]}
    - ansible.builtin.group_by: {key: "grouped_{{ total }}"}
    - block:
        - ansible.builtin.assert: {that: total | int == 7, fail_msg: "total is {{ total }}", quiet: true}
      rescue:
        - ansible.builtin.set_fact: {caught: "{{ ansible_failed_result.msg }}"}
    - ansible.builtin.fail: {msg: ignored}
      ignore_errors: true
    - ansible.builtin.include_tasks: "{{ playbook_dir }}/included.yml"
      loop: [a, b]
    - ansible.builtin.command: echo never
      when: total | int > 100
      register: not_run
    - ansible.builtin.command: echo ran
      when: total | int == 6
      register: run
      changed_when: false
    - ansible.builtin.copy:
        content: >-
          {{ [total, hostvars.other.given, groups.late, groups.grouped_6, caught, included,
          not_run.skipped, run.stdout] | to_json }}
        dest: "{{ playbook_dir }}/result.json"
        mode: "0600"
    - ansible.builtin.debug: {msg: "RUNNER {{ runner }}"}
    - ansible.builtin.command: echo "ALONE {{ lookup('ansible.builtin.pipe', 'echo $PPID') }}"
      changed_when: false
      register: alone
    - ansible.builtin.debug: {msg: "{{ alone.stdout }}"}

- hosts: localhost:second
  gather_facts: false
  vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
  tasks:
    - ansible.builtin.command: echo "BESIDE {{ lookup('ansible.builtin.pipe', 'echo $PPID') }}"
      changed_when: false
      register: beside
    - ansible.builtin.debug: {msg: "{{ beside.stdout }}"}
"""


@pytest.mark.parametrize("strategy", ["mitogen_linear_unpinned", "linear"])
def test_tasks_that_stay_in_the_controller_run_in_its_process_with_the_same_results(tmp_path, strategy):
    """The default strategy runs set_fact, assert, fail, debug, the includes, add_host and group_by
    without forking a worker, and a module task too when its host is the only one of the round;
    every result is what Ansible's own linear strategy gives."""
    (tmp_path / "play.yml").write_text(IN_PROCESS_PLAYBOOK)
    (tmp_path / "included.yml").write_text(
        '- ansible.builtin.set_fact: {included: "{{ (included | default([])) + [item] }}"}\n'
    )
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost: {ansible_connection: local}\n    other: {}\n"
        "    second: {ansible_connection: local}\n"
    )
    process = subprocess.Popen(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        cwd=REPO,
        env=toolchain_env(ANSIBLE_STRATEGY=strategy, ANSIBLE_CALLBACKS_ENABLED="openpolicy.deploy.stage_times"),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    result = json.loads((tmp_path / "result.json").read_text())
    assert result == [6, "handed over", ["added"], ["localhost"], "total is 6", ["a", "b"], True, "ran"], output
    runner = int(re.search(r"RUNNER (\d+)", output).group(1))
    # Ansible's linear strategy runs every task in a forked worker.
    in_process = strategy == "mitogen_linear_unpinned"
    assert (runner == process.pid) == in_process, output
    alone = int(re.search(r"ALONE (\d+)", output).group(1))
    assert (alone == process.pid) == in_process, output
    beside = [int(pid) for pid in re.findall(r"BESIDE (\d+)", output)]
    assert len(beside) == 2 and process.pid not in beside, output


# The first module task on the control host reports when the Python it runs in started, and the
# time just before that task (clock ticks since boot, as /proc gives both).
PREWARM_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
  tasks:
    - ansible.builtin.pause: {seconds: 2}
    - ansible.builtin.set_fact:
        before_first_module: "{{ lookup('ansible.builtin.pipe', 'cut -d\\" \\" -f22 /proc/self/stat') }}"
    - ansible.builtin.shell: echo "PYTHON $(cut -d' ' -f22 /proc/$PPID/stat)"
      register: first
      changed_when: false
    - ansible.builtin.debug: {msg: "BEFORE {{ before_first_module }} {{ first.stdout }}"}
"""


@pytest.mark.parametrize("prewarm", [True, False])
def test_the_control_hosts_python_starts_at_the_runs_first_round(tmp_path, prewarm):
    """The default strategy starts the Python of a host reached over the local connection when
    the run begins (a forked ping), not at its first module task; openpolicy_prewarm: false
    leaves it to that task."""
    (tmp_path / "play.yml").write_text(PREWARM_PLAYBOOK)
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(tmp_path / "hosts.yml"),
            str(tmp_path / "play.yml"),
            "-e",
            f"openpolicy_prewarm={str(prewarm).lower()}",
        ],
        cwd=REPO,
        env=toolchain_env(OPENPOLICY_PREWARM="1"),
        text=True,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    before, started = (int(t) for t in re.search(r"BEFORE (\d+) PYTHON (\d+)", result.stdout).groups())
    assert (started < before) == prewarm, result.stdout


def test_second_bootstrap_changes_and_rebuilds_nothing():
    """Run twice: the second run reports every step cached and leaves every binary as it was."""
    first = subprocess.run(
        [sys.executable, "scripts/bootstrap.py"], cwd=REPO, text=True, capture_output=True, check=False
    )
    assert first.returncode == 0, first.stderr
    binaries = sorted((REPO / ".toolchain" / "bin").iterdir())
    before = {b.name: b.resolve().stat().st_mtime_ns for b in binaries}
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "scripts/bootstrap.py"], cwd=REPO, text=True, capture_output=True, check=False
    )
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert "built" not in second.stdout and "installed" not in second.stdout, second.stdout
    assert second.stdout.count("cached") >= 3, second.stdout
    after = {b.name: b.resolve().stat().st_mtime_ns for b in sorted((REPO / ".toolchain" / "bin").iterdir())}
    assert after == before
    assert elapsed < 60, f"a warm bootstrap should take seconds, took {elapsed:.0f}s"


def test_bootstrap_rejects_an_unknown_step():
    result = subprocess.run(
        [sys.executable, "scripts/bootstrap.py", "--only", "everything"],
        cwd=REPO,
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--only: unknown step everything" in result.stderr


def test_bootstrap_explains_a_missing_go_toolchain(tmp_path):
    env = toolchain_env(PATH=f"{tmp_path}:/usr/bin:/bin", OPENPOLICY_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "scripts/bootstrap.py", "--only", "go"],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr and "install Go" in result.stderr


def test_pins_are_tomllib_readable_without_any_package():
    with (REPO / "versions.toml").open("rb") as handle:
        assert tomllib.load(handle)["go"]["kubernetes"].startswith("v1.36.")


# --- The system step: versions.toml [apt] and the Go toolchain, checked before any build ----

APT = pins.apt_packages()
ALL_INSTALLED = "".join(f"{name} install ok installed\n" for name in APT)


def dpkg_without(*absent: str) -> str:
    """dpkg-query's output when `absent` are not installed (one removed, the rest never were)."""
    lines = [f"{name} install ok installed" for name in APT if name not in absent]
    if absent:
        lines.append(f"{absent[0]} deinstall ok config-files")
    return "\n".join(lines) + "\n"


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake machine: dpkg-query's answers in turn, the user id, sudo, the commands run, and the
    kernel's reserved ports (a file of its own: the tests never change the real sysctl)."""
    reserved = tmp_path / "ip_local_reserved_ports"
    reserved.write_text(pins.load_versions()["kernel"]["reserved_loopback_ports"] + "\n")
    state = {"dpkg": [ALL_INSTALLED], "euid": 1000, "sudo": False, "ran": [], "reserved": reserved}
    monkeypatch.setattr(bootstrap, "RESERVED_PORTS", reserved)

    def dpkg_status(packages):
        assert packages == list(APT)
        return state["dpkg"].pop(0) if len(state["dpkg"]) > 1 else state["dpkg"][0]

    def run(cmd, cwd=None, env=None):
        state["ran"].append(cmd)
        if "apt-get" in cmd:
            assert env == {"DEBIAN_FRONTEND": "noninteractive"}
        return ""

    monkeypatch.setattr(bootstrap, "dpkg_status", dpkg_status)
    monkeypatch.setattr(bootstrap, "run", run)
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: state["euid"])
    monkeypatch.setattr(bootstrap, "passwordless_sudo", lambda: state["sudo"])
    monkeypatch.setattr(bootstrap, "go_toolchain_problem", lambda versions: state.get("go"))
    return state


def test_every_apt_package_says_why_it_is_needed():
    assert len(APT) >= 15
    for name, why in APT.items():
        assert name == name.lower() and " " not in name, name
        assert len(why) > 10, f"[apt] {name}: say why it is needed"


def test_the_system_check_comes_before_any_build():
    assert next(iter(bootstrap.STEPS)) == "system"


def test_dpkg_output_names_what_is_missing_in_list_order():
    status = dpkg_without("runc", "prometheus")
    assert bootstrap.missing_packages(list(APT), status) == ["runc", "prometheus"]
    assert bootstrap.missing_packages(list(APT), ALL_INSTALLED) == []
    assert bootstrap.missing_packages(["podman"], "podman:amd64 install ok installed\n") == []


def test_nothing_missing_installs_nothing(machine):
    assert "15 Debian packages" in bootstrap.step_system(pins.load_versions())
    assert machine["ran"] == []


# --- The test hosts' loopback ports, kept out of the kernel's ephemeral range ------------------

WANTED = pins.load_versions()["kernel"]["reserved_loopback_ports"]


def test_reserved_ports_are_added_to_what_the_kernel_already_reserves(machine):
    machine.update(euid=0)
    machine["reserved"].write_text("8080,9000-9010\n")
    assert bootstrap.step_system(pins.load_versions()).endswith(f"reserved ports {WANTED}")
    assert machine["reserved"].read_text() == f"8080,9000-9010,{WANTED}\n"
    assert bootstrap.step_system(pins.load_versions()).endswith("test ports reserved")


def test_reserved_ports_are_set_with_sudo_or_else_named_in_one_line(machine):
    machine["reserved"].write_text("\n")
    machine.update(sudo=True)
    bootstrap.step_system(pins.load_versions())
    assert machine["ran"] == [["sudo", "-n", "sysctl", "-q", "-w", f"net.ipv4.ip_local_reserved_ports={WANTED}"]]
    machine.update(sudo=False, ran=[])
    result = bootstrap.step_system(pins.load_versions())
    assert machine["ran"] == []
    assert result.endswith(f"run: sudo sysctl -q -w net.ipv4.ip_local_reserved_ports={WANTED}")


def test_every_fixed_port_in_the_ephemeral_range_is_reserved():
    """Every five-digit number 32768-60999 that the local inventory, Molecule or the e2e modules
    write is taken as a port a host listens on; the staging and production topologies' ranges too."""
    reserved = bootstrap.port_set(WANTED)
    files = [
        *(REPO / "inventories/local").rglob("*.yml"),
        *(REPO / "molecule").rglob("*.yml"),
        *(REPO / "tests/e2e").glob("*.py"),
    ]
    unreserved = {
        f"{path.relative_to(REPO)}: {number}"
        for path in files
        for number in map(int, re.findall(r"\b\d{5}\b", path.read_text()))
        if 32768 <= number <= 60999 and number not in reserved
    }
    assert not unreserved, f"add to versions.toml [kernel] reserved_loopback_ports: {sorted(unreserved)}"
    for base in (53000, 53200):  # tests/e2e/topology.py PORT_BASES: two hundred ports each
        assert set(range(base, base + 200)) <= reserved


def test_root_installs_every_missing_package_in_one_apt_call(machine):
    machine.update(euid=0, dpkg=[dpkg_without("debootstrap", "redis-tools"), ALL_INSTALLED])
    result = bootstrap.step_system(pins.load_versions())
    assert machine["ran"] == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap", "redis-tools", "-qq"],
    ]
    assert result.startswith("installed debootstrap redis-tools")


def test_passwordless_sudo_installs_through_sudo(machine):
    machine.update(sudo=True, dpkg=[dpkg_without("podman"), ALL_INSTALLED])
    bootstrap.step_system(pins.load_versions())
    assert [cmd[:3] for cmd in machine["ran"]] == [["sudo", "-n", "apt-get"]] * 2
    assert machine["ran"][1][-2:] == ["podman", "-qq"]


def test_without_root_or_sudo_one_line_names_every_missing_package(machine):
    machine.update(dpkg=[dpkg_without("podman", "prometheus-alertmanager", "make")])
    with pytest.raises(bootstrap.BootstrapError) as error:
        bootstrap.step_system(pins.load_versions())
    assert machine["ran"] == []
    (line,) = str(error.value).splitlines()
    assert "missing Debian packages podman, prometheus-alertmanager, make;" in line
    assert line.endswith("apt-get install -y --no-install-recommends podman prometheus-alertmanager make")


def test_a_missing_go_is_named_with_the_missing_packages_at_once(machine):
    machine.update(dpkg=[dpkg_without("git")], go="no Go toolchain on PATH: ...; install Go >= 1.26")
    with pytest.raises(bootstrap.BootstrapError) as error:
        bootstrap.step_system(pins.load_versions())
    packages, go = str(error.value).splitlines()
    assert "missing Debian packages git;" in packages
    assert go.startswith("no Go toolchain on PATH")


def test_packages_apt_did_not_install_are_named(machine):
    machine.update(euid=0, dpkg=[dpkg_without("runc")])
    with pytest.raises(bootstrap.BootstrapError, match="apt-get left runc uninstalled"):
        bootstrap.step_system(pins.load_versions())


@pytest.mark.parametrize(
    ("reported", "problem"),
    [
        ("go1.26.8", None),
        ("go1.27rc1", None),
        ("devel +abc", "is Go an unknown version"),
        ("go1.19.8", "is Go 1.19.8, the [go] programs need Go >= 1.26"),
    ],
)
def test_go_older_than_the_minimum_is_named(tmp_path, monkeypatch, reported: str, problem: str | None):
    go = tmp_path / "go"
    go.write_text(f"#!/bin/sh\necho {reported}\n")
    go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    found = bootstrap.go_toolchain_problem(pins.load_versions())
    if problem is None:
        assert found is None
    else:
        assert problem in found and "install Go >= 1.26" in found


def test_readme_lists_the_apt_table_and_its_install_line():
    readme = (REPO / "README.md").read_text()
    assert f"sudo {pins.apt_install_command(APT)}\n" in readme
    for name, why in APT.items():
        assert f"| `{name}` | {why} |" in readme, f"README: no row for {name} as versions.toml [apt] has it"


def test_ci_reads_the_packages_from_the_bootstrap_not_a_list_of_its_own():
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/bootstrap.py --only system" in ci
    assert "apt-get" not in ci and "debootstrap" not in ci


def test_durations_read_as_a_person_would_say_them():
    assert bootstrap.duration(4.24) == "4.2s"
    assert bootstrap.duration(175) == "2m55s"
    assert bootstrap.duration(3720) == "1h02m"


def test_a_long_step_says_what_it_does_and_how_long_it_took(capsys, monkeypatch):
    monkeypatch.setattr(bootstrap, "HEARTBEAT_SECONDS", 0.05)
    said: list[str] = []
    with bootstrap.progress("building helm v4.3.1", "built helm v4.3.1"):
        # Until the heartbeat has spoken once: on a loaded machine its thread may start late.
        deadline = time.monotonic() + 30
        while "still building" not in "".join(said) and time.monotonic() < deadline:
            time.sleep(0.05)
            said.append(capsys.readouterr().out)
    said.append(capsys.readouterr().out)
    lines = "".join(said).splitlines()
    assert lines[0] == "bootstrap: building helm v4.3.1 ..."
    assert any(re.match(r"bootstrap: still building helm v4\.3\.1 \(\d", line) for line in lines[1:-1]), lines
    assert re.match(r"bootstrap: built helm v4\.3\.1 in \d", lines[-1]), lines


def test_a_second_bootstrap_waits_for_the_one_building_the_same_folder(tmp_path, capsys):
    folder = tmp_path / "helm-v4.3.1"
    order = []

    def second() -> None:
        with bootstrap.cache_lock(folder):
            order.append("second builds or finds it built")

    with bootstrap.cache_lock(folder):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join()
    assert order == ["first done", "second builds or finds it built"]
    assert "waiting for another bootstrap that is building helm-v4.3.1" in capsys.readouterr().out


def test_a_second_bootstrap_waits_for_the_one_installing_a_tool_venv(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bootstrap, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setattr(bootstrap, "TOOLCHAIN", tmp_path / "toolchain")
    installs = []

    def fake_pip_install(folder, requirements, constraints) -> None:
        installs.append(requirements)
        (folder / "bin").mkdir(parents=True)
        (folder / "bin" / "checkov").write_text("")

    monkeypatch.setattr(bootstrap, "pip_install", fake_pip_install)
    versions = pins.load_versions()
    folder = bootstrap.tool_venv_folder("checkov", versions)
    reports = []
    with bootstrap.cache_lock(folder):
        thread = threading.Thread(target=lambda: reports.append(bootstrap.step_tools(versions)))
        thread.start()
        time.sleep(0.3)
        assert installs == [], "installed while another bootstrap held the folder"
        fake_pip_install(folder, ["checkov==3.3.30"], {})
        bootstrap.mark_complete(folder, time.monotonic())
    thread.join()
    assert installs == [["checkov==3.3.30"]], "the second bootstrap installed again"
    assert reports == [f"{folder.name} cached"]
    assert f"waiting for another bootstrap that is building {folder.name}" in capsys.readouterr().out


# A callback that reports, at the run's end, the controller's garbage collector settings.
GC_REPORT_CALLBACK = """
import gc
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "gc_report"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        print(f"GC threshold={gc.get_threshold()[0]} frozen={gc.get_freeze_count()}")
"""


@pytest.mark.parametrize("strategy", ["mitogen_linear_unpinned", "linear"])
def test_the_default_strategy_keeps_what_the_run_loaded_out_of_the_collectors_scans(tmp_path, strategy):
    """From the first play on, the objects loaded before it are frozen and the youngest generation is
    collected once per GC_THRESHOLD new objects; Ansible's own strategy leaves Python's defaults."""
    (tmp_path / "callbacks").mkdir()
    (tmp_path / "callbacks" / "gc_report.py").write_text(GC_REPORT_CALLBACK)
    (tmp_path / "play.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n"
    )
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(tmp_path / "play.yml")],
        cwd=REPO,
        env=toolchain_env(
            ANSIBLE_STRATEGY=strategy,
            ANSIBLE_CALLBACK_PLUGINS=str(tmp_path / "callbacks"),
            ANSIBLE_CALLBACKS_ENABLED="gc_report",
            OPENPOLICY_PREWARM="0",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    threshold, frozen = map(int, re.search(r"GC threshold=(\d+) frozen=(\d+)", result.stdout).groups())
    if strategy == "mitogen_linear_unpinned":
        assert (threshold, frozen > 10_000) == (20_000, True), result.stdout
    else:
        assert (threshold, frozen) == (700, 0), result.stdout


def load_default_strategy():
    """plugins/strategy/mitogen_linear_unpinned.py as a module of its own (loading it patches Mitogen)."""
    spec = importlib.util.spec_from_file_location(
        "mitogen_linear_unpinned", REPO / "plugins" / "strategy" / "mitogen_linear_unpinned.py"
    )
    strategy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strategy)
    return strategy


def test_the_default_strategy_keeps_what_mitogen_prepares_for_a_module_across_runs(tmp_path, monkeypatch):
    """The compressed source and related modules of a module sent to a host: built and kept on the
    first run, read back on the next (the same answer), made anew when the source changes."""
    strategy = load_default_strategy()
    import mitogen.master

    monkeypatch.setattr(strategy, "MODULE_CACHE", tmp_path)
    broker = mitogen.master.Broker()
    try:
        responder = mitogen.master.Router(broker).responder
        built = strategy._build_tuple_kept_across_runs(responder, "ansible.module_utils.basic")
        entries = sorted(tmp_path.iterdir())
        assert len(entries) == 1
        written = entries[0].stat().st_mtime_ns
        responder._cache.clear()  # Mitogen's memory of this run: the next read is from the file
        read = strategy._build_tuple_kept_across_runs(responder, "ansible.module_utils.basic")
        assert read == built and read[4], "the same source, compressed source and related modules"
        assert entries[0].stat().st_mtime_ns == written, "read, not built and written again"
        assert mitogen.master.ModuleResponder._build_tuple.__wrapped__ is strategy._MITOGEN_BUILD_TUPLE
        path, source, _ = responder._finder.get_module_source("ansible.module_utils.basic")
        assert strategy._cache_key(source + b"\n", "ansible.module_utils.basic", path) != entries[0].name
    finally:
        broker.shutdown()
        broker.join()


def test_the_default_strategy_keeps_the_code_mitogens_module_scan_compiles_across_runs(tmp_path, monkeypatch):
    """The scan of a module's ansible.module_utils imports compiles each file it reaches: the code
    is kept (in memory and on disk), read back on the next run, and the scan's answer is the same."""
    strategy = load_default_strategy()
    import ansible.executor.module_common
    from ansible_mitogen import module_finder

    monkeypatch.setattr(strategy, "MODULE_CACHE", tmp_path)
    module = REPO / "plugins" / "modules" / "release_tiers.py"
    search = (ansible.executor.module_common._MODULE_UTILS_PATH,)

    def scan():
        return module_finder.scan("ansible_module_release_tiers", str(module), search)

    monkeypatch.setattr(module_finder, "compile", compile, raising=False)
    plain = scan()
    monkeypatch.setattr(module_finder, "compile", strategy._compile_kept_across_runs)
    first = scan()
    written = {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()}
    assert first == plain and any(name == "ansible.module_utils.basic" for name, _, _ in first)
    assert len(written) == len(plain) + 1, "the module and each file it reaches"
    strategy._COMPILED.clear()  # the next run: read from the files, not compiled or written again
    assert scan() == plain
    assert {entry.name: entry.stat().st_mtime_ns for entry in tmp_path.iterdir()} == written
    assert strategy._compile_kept_across_runs("x = 1\n", "<str>", "exec") is not None, "a str source: compile's own"
    assert len(list(tmp_path.iterdir())) == len(written)


def test_list_names_the_tool_venvs_beside_the_main_venv():
    listed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bootstrap.py"), "--list"], text=True, capture_output=True, check=True
    ).stdout.splitlines()
    versions = pins.load_versions()
    assert str(bootstrap.venv_folder(versions)) in listed
    assert str(bootstrap.tool_venv_folder("checkov", versions)) in listed
