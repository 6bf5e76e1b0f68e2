"""Debian packages present, as ``ansible.builtin.apt`` with ``state: present`` installs them, with a
rerun that finds them all installed costing one ``dpkg-query`` instead of apt's cache.

    openpolicy.deploy.apt_packages:
      name: [postgresql-15, python3-psycopg2]   # or one name, or `name=version` (`*` allowed)
      update_cache: true
      cache_valid_time: 3600
      install_recommends: false

Takes the apt module's arguments. When every package named is installed (dpkg's status `ii`)
in the version asked for, if any, the task is ok and unchanged without running apt: apt would
open its cache (python-apt, half a second to two on a host) to find the same. Anything else (a
package missing or in another version, check mode, arguments beyond a plain install) runs
``ansible.builtin.apt`` with the task's own arguments, so its result is apt's. A stale package
list is refreshed only when something is to be installed, which is when its age matters.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from ansible.plugins.action import ActionBase

# Arguments a plain install uses: any other (upgrade, deb, purge, autoremove...) goes to apt.
PLAIN_INSTALL = frozenset(
    {"name", "pkg", "package", "state", "update_cache", "cache_valid_time", "install_recommends", "lock_timeout"}
)
# A package name (Debian policy 5.6.1), optionally `=version`, where apt allows `*` as a wildcard.
NAME_VERSION = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]+)(=(?P<version>[A-Za-z0-9.+~:*-]+))?")
SHOW_FORMAT = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"


def wanted_packages(args: dict[str, Any]) -> dict[str, str | None] | None:
    """{name: version pattern or None} of a plain install, else None (apt decides)."""
    if not set(args) <= PLAIN_INSTALL or args.get("state", "present") != "present":
        return None
    names = args.get("name", args.get("pkg", args.get("package")))
    if isinstance(names, str):
        names = names.split(",")
    if not isinstance(names, list) or not names:
        return None
    wanted = {}
    for item in names:
        match = NAME_VERSION.fullmatch(str(item).strip())
        if match is None:
            return None
        wanted[match["name"]] = match["version"]
    return wanted


def all_installed(wanted: dict[str, str | None], dpkg_lines: str) -> bool:
    """True when dpkg lists every wanted package as installed (`ii`) in a matching version."""
    installed: dict[str, list[str]] = {}
    for line in dpkg_lines.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[2].strip() == "ii":
            installed.setdefault(fields[0], []).append(fields[1])
    return all(
        name in installed and (version is None or any(fnmatch.fnmatchcase(v, version) for v in installed[name]))
        for name, version in wanted.items()
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        wanted = wanted_packages(self._task.args)
        if wanted is not None and not self._task.check_mode:
            query = self._execute_module(
                module_name="ansible.legacy.command",
                module_args={"argv": ["dpkg-query", "--show", f"--showformat={SHOW_FORMAT}", *wanted]},
                task_vars=task_vars,
            )
            # dpkg-query fails when it knows a name not at all; then apt installs it.
            if query.get("rc") == 0 and all_installed(wanted, query.get("stdout", "")):
                return result | {"changed": False, "cache_updated": False}
        return result | self._execute_module(
            module_name="ansible.legacy.apt", module_args=self._task.args, task_vars=task_vars
        )
