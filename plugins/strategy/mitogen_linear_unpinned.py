"""Mitogen's linear strategy without its CPU pinning (ansible.cfg's default).

On a machine with fewer than four cores, Mitogen keeps core 0 for its connection multiplexer and
pins the controller, every task's worker and what they start (helm, kubectl, psql ...) to the
one other core. On the two cores these machines have, that made every Ansible run share one
core with itself and with the other runs beside it (the end-to-end modules run two at a time):
a no-op deploy.yml and a set of 120 local tasks each took longer than without Mitogen. Here the
scheduler places every process: Mitogen's own fallback policy where the platform cannot pin.
`ANSIBLE_STRATEGY=mitogen_linear` is Mitogen's pinned strategy; `linear` is Ansible's own.

It also keeps, across runs, what Mitogen prepares for each Python module it sends to a host:
the source compressed (and for Mitogen's own modules stripped of comments) and the list of the
modules it imports, found by compiling it. Mitogen keeps these for one run only, so every run
spent about 0.4 s of its first task on one host preparing the same 60-odd modules again.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
from pathlib import Path

import ansible_mitogen.affinity
import ansible_mitogen.loaders
import ansible_mitogen.strategy
import mitogen
import mitogen.core
import mitogen.master

# Read at call time by Mitogen's controller, multiplexer and worker set-up: the base policy
# assigns nothing.
ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()

# Beside the toolchain's other caches (scripts/openpolicy_tools/pins.py). An entry is named by
# the hash of everything that went into it, so a changed module or Mitogen gets entries of its own.
MODULE_CACHE = (
    Path(os.environ.get("OPENPOLICY_CACHE", Path.home() / ".cache" / "openpolicy-deploy")) / "mitogen-modules"
)
# Mitogen's own, also when this file is loaded a second time in one process.
_MITOGEN_BUILD_TUPLE = getattr(
    mitogen.master.ModuleResponder._build_tuple, "__wrapped__", mitogen.master.ModuleResponder._build_tuple
)


def _cache_key(fullname: str, path: str, source: bytes) -> str:
    identity = repr((mitogen.__version__, sys.version, fullname, path)).encode()
    return hashlib.sha256(identity + b"\0" + source).hexdigest()


def _read_entry(key: str) -> tuple[bytes, list[str]] | None:
    try:
        compressed, related = marshal.loads((MODULE_CACHE / key).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return compressed, related


def _write_entry(key: str, compressed: bytes, related: list[str]) -> None:
    # Written under a name of its own and renamed: a run beside this one never reads half an entry.
    try:
        MODULE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = MODULE_CACHE / f"{key}.{os.getpid()}"
        partial.write_bytes(marshal.dumps((compressed, related)))
        partial.replace(MODULE_CACHE / key)
    except OSError:
        pass  # no cache this time: Mitogen's own answer is already in hand


def _build_tuple_kept_across_runs(self, fullname):
    """Mitogen's ModuleResponder._build_tuple, with the compressed source and the related
    modules read from MODULE_CACHE when the module's source is the one they were made from.
    The policy check and the package's submodules (a folder listing) are done again each run."""
    if fullname in self._cache or fullname == "__main__":
        return _MITOGEN_BUILD_TUPLE(self, fullname)
    path, source, is_pkg = self._finder.get_module_source(fullname)
    if not path or source is None or mitogen.master.is_stdlib_path(path):
        return _MITOGEN_BUILD_TUPLE(self, fullname)
    key = _cache_key(fullname, path, source)
    entry = _read_entry(key)
    if entry is None:
        built = _MITOGEN_BUILD_TUPLE(self, fullname)
        _write_entry(key, bytes(built[3]), list(built[4]))
        return built
    self.policy.denied_raise(fullname)
    compressed, related = entry
    built = (
        mitogen.core.to_text(fullname),
        mitogen.master.get_child_modules(path, fullname) if is_pkg else None,
        mitogen.core.to_text(path),
        mitogen.core.Blob(compressed),
        [name for name in related if not self.policy.denied(name)],
    )
    self._cache[fullname] = built
    return built


_build_tuple_kept_across_runs.__wrapped__ = _MITOGEN_BUILD_TUPLE
mitogen.master.ModuleResponder._build_tuple = _build_tuple_kept_across_runs

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    """Mitogen's connection handling over Ansible's linear strategy, processes unpinned."""
