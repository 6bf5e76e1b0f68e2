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
It keeps likewise the code Mitogen compiles to list the ansible.module_utils a module imports
(_compile_kept_across_runs): for every module a run used (command, stat, helm_releases ...)
Mitogen compiled the module and the same 46 files of ansible.module_utils again, some 45 ms
each, while the task waited.

And it runs the tasks that never reach a host (set_fact, assert, fail, debug, the includes,
add_host, group_by, set_stats, include_vars, a role's argument spec check, the preflight's check
and the vault file's read and write) in the controller's own process,
where Ansible forks a worker for every task. A fork of the controller costs little itself,
but both processes then fault on every page either writes: on this machine's virtual CPUs
100 set_fact tasks took 4.3 to 6.0 s with 377,000 page faults, and 2.1 to 2.7 s with 25,000
run in process. The task runs as a worker would run it: on its own copy (with its blocks), and
its result goes through the same queue, callbacks and handling.

A task that reaches a host runs in the controller's process too when it is the only one of its
round: a play on one host (control, a single backup or monitoring host) or a round where the
other hosts have nothing to run. A worker would buy no parallelism there, only the fork. On
three hosts with 80 module tasks each (command and stat over Mitogen), run in process, the
run took 9 CPU-s against 16 to 19. A round with two hosts or more is queued to workers as
before, so hosts far away are still waited on side by side.

And it keeps the code Jinja compiles for each template and conditional for the rest of the run
(plugins/plugin_utils/template_code_cache.py): ansible-core compiles the same text again at
every task that renders it.

And it sets the controller's garbage collector for a short run that keeps what it loads: the
objects of the start (imports, inventory, playbook) are frozen out of its scans, and it collects
once per 20,000 new objects instead of 700. A cold deploy spent 0.14 to 0.17 s of the controller's
time in 358 collections, and its exit some 0.1 s more; frozen, 0.03 s in 31.

And it starts the control host's Python when the run begins, in a forked process, beside the
preflight's tasks in the controller, instead of inside the first module task there
(_prewarm_local_hosts; `openpolicy_prewarm: false` turns it off).
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import marshal
import os
import signal
import sys
import threading
import time
import traceback
import types
from pathlib import Path

import ansible_mitogen.affinity
import ansible_mitogen.loaders
import ansible_mitogen.module_finder
import ansible_mitogen.strategy
import mitogen
import mitogen.core
import mitogen.fork
import mitogen.master
from ansible import constants as C
from ansible.executor.task_executor import TaskExecutor
from ansible.executor.task_result import _RawTaskResult
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.playbook.block import Block
from ansible.playbook.task import Task
from ansible.plugins.loader import get_plugin_loader_namespace
from ansible.template import Templar
from ansible.utils.display import Display
from ansible_collections.openpolicy.deploy.plugins.plugin_utils import template_code_cache

try:  # ansible-core 2.19's (versions.toml): the context a worker runs its task in
    from ansible._internal._task import TaskContext
except ImportError:  # another ansible-core: every task goes to a worker
    TaskContext = None

template_code_cache.install()

# New objects between two collections of the youngest generation (Python's default is 700).
GC_THRESHOLD = 20_000

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


def _cache_key(source: bytes, *identity: str) -> str:
    """An entry's name: the hash of Mitogen's and Python's versions, `identity` and `source`."""
    named = repr((mitogen.__version__, sys.version, *identity)).encode()
    return hashlib.sha256(named + b"\0" + source).hexdigest()


def _read_entry(key: str):
    """What _write_entry kept under `key`, or None."""
    try:
        return marshal.loads((MODULE_CACHE / key).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None


def _write_entry(key: str, value) -> None:
    # Written under a name of its own and renamed: a run beside this one never reads half an entry.
    try:
        MODULE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = MODULE_CACHE / f"{key}.{os.getpid()}"
        partial.write_bytes(marshal.dumps(value))
        partial.replace(MODULE_CACHE / key)
    except OSError:
        pass  # no cache this time: the value is already in hand


def _build_tuple_kept_across_runs(self, fullname):
    """Mitogen's ModuleResponder._build_tuple, with the compressed source and the related
    modules read from MODULE_CACHE when the module's source is the one they were made from.
    The policy check and the package's submodules (a folder listing) are done again each run."""
    if fullname in self._cache or fullname == "__main__":
        return _MITOGEN_BUILD_TUPLE(self, fullname)
    path, source, is_pkg = self._finder.get_module_source(fullname)
    if not path or source is None or mitogen.master.is_stdlib_path(path):
        return _MITOGEN_BUILD_TUPLE(self, fullname)
    key = _cache_key(source, fullname, path)
    entry = _read_entry(key)
    if not (isinstance(entry, tuple) and len(entry) == 2):
        built = _MITOGEN_BUILD_TUPLE(self, fullname)
        _write_entry(key, (bytes(built[3]), list(built[4])))
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

# The code of each source Mitogen's module scan compiled in this run (it runs in the
# multiplexer's process, one scan at a time), by the key of _compile_kept_across_runs.
_COMPILED: dict[str, object] = {}


def _compile_kept_across_runs(source, filename, mode, *more, **options):
    """compile() as Mitogen's module scan calls it (module_finder.scan: a module's source, then each
    ansible.module_utils file it reaches, to list their imports), with the code kept for the run and
    in MODULE_CACHE across runs: a code object depends only on the source, the name, the mode and
    the Python. Any other call is compile's own."""
    if more or options or not isinstance(source, bytes):
        return compile(source, filename, mode, *more, **options)
    key = "code-" + _cache_key(source, filename, mode)
    code = _COMPILED.get(key) or _read_entry(key)
    if not isinstance(code, types.CodeType):
        # Without the futures of this file: module_finder's own (absolute_import, division,
        # print_function, unicode_literals) change nothing on Python 3.
        code = compile(source, filename, mode, 0, True)
        _write_entry(key, code)
    _COMPILED[key] = code
    return code


# The scan looks compile up in its module's globals before the builtins.
ansible_mitogen.module_finder.compile = _compile_kept_across_runs

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


# Action plugins that run in the controller and never use the host's connection.
IN_PROCESS_ACTIONS = frozenset(
    f"{prefix}{action}"
    for action in (
        "set_fact",
        "assert",
        "fail",
        "debug",
        "include_tasks",
        "include_role",
        "add_host",
        "group_by",
        "set_stats",
        "include_vars",
        "validate_argument_spec",
    )
    for prefix in ("", "ansible.builtin.", "ansible.legacy.")
) | {"openpolicy.deploy.preflight", "openpolicy.deploy.vault_file"}


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    """Mitogen's connection handling over Ansible's linear strategy, processes unpinned, and the
    tasks that stay in the controller run in its process."""

    # Hosts the current round of the linear loop queues a task to (set before it queues them).
    _hosts_this_round = 0
    _run_play_context = None

    def run(self, iterator, play_context, result=0):
        self._run_play_context = play_context
        _keep_what_is_loaded()
        try:
            return super().run(iterator, play_context, result)
        finally:
            _reap_prewarms()

    def _get_next_task_lockstep(self, hosts, iterator):
        _prewarm_local_hosts(self, hosts, iterator)
        host_tasks = super()._get_next_task_lockstep(hosts, iterator)
        # Meta tasks (the no-ops of hosts waiting in another block) are never queued.
        self._hosts_this_round = sum(1 for _host, task in host_tasks if task.action not in C._ACTION_META)
        return host_tasks

    def _queue_task(self, host, task, task_vars, play_context):
        alone = self._hosts_this_round == 1
        # A task that retries (until) sleeps between its tries: with other hosts in the round, in
        # a worker, not in the controller.
        if TaskContext is None or not (alone or (task.action in IN_PROCESS_ACTIONS and not task.until)):
            return super()._queue_task(host, task, task_vars, play_context)
        # What StrategyBase._queue_task records for the result's handling, then what
        # WorkerProcess._run does, on a copy of the task as the worker would have (a fork's).
        self._queued_task_cache[(host.name, task._uuid)] = {
            "host": host,
            "task": task,
            "task_vars": task_vars,
            "play_context": play_context,
        }
        self._tqm.send_callback("v2_runner_on_start", host, task)
        own_task = task.copy(exclude_tasks=True)
        try:
            with TaskContext(own_task):
                result = TaskExecutor(
                    host,
                    own_task,
                    task_vars,
                    play_context,
                    self._loader,
                    get_plugin_loader_namespace(),
                    self._final_q,
                    self._variable_manager,
                ).run()
        except Exception:  # a worker's crash fails its task; so does this
            result = {"failed": True, "msg": f"task failed in the controller:\n{traceback.format_exc()}"}
        self._pending_results += 1
        self._final_q.send_task_result(
            _RawTaskResult(host=host, task=own_task, return_data=result, task_fields=own_task.dump_attrs())
        )


def _keep_what_is_loaded() -> None:
    """At the first play, once the playbook and inventory are loaded: what is in memory now stays
    to the run's end, and the young objects are collected less often (the docstring)."""
    if gc.get_threshold()[0] == GC_THRESHOLD:
        return
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


# The interpreters a forked process of this run started over the local connection (pid; 0 once
# reaped), and whether the run's first round was looked at (once per run).
_PREWARMING: dict[str, int] = {}
_PREWARM_STATE = {"looked": False}
# The longest the run's exit waits for a prewarm (a ping over the local connection, some 0.4 s).
PREWARM_TIMEOUT = 10.0


def _prewarm_local_hosts(strategy, hosts, iterator) -> None:
    """Start the Python of the hosts of the run's first round reached over the local connection
    (the control host: every playbook's preflight runs there first) in the background.

    Mitogen starts a host's Python at the host's first module task and keeps it for the run: for
    the control host about 0.35 s (the interpreter, Mitogen's core sent to it, then
    ansible.module_utils), spent inside that task, while the controller had only run tasks of
    its own before it (a deploy's preflight, about 0.5 s). A process forked at the play's first
    round runs a ping there instead: it asks Mitogen's multiplexer for the connection the first
    module task will ask for, so that task finds it made or being made. The process's result is
    dropped and it writes nothing to the terminal; when it fails, the first task connects as it
    always did. Hosts on the same interpreter share one connection: one ping for them all. Only
    the first round is looked at: a host's variables cost some milliseconds to gather, and the
    nine release hosts of a deploy share the control host's connection.

    A playbook that runs no module on the control host sets `openpolicy_prewarm: false` on its
    plays (backup.yml: its preflight runs in the controller and its backup over SSH), and
    OPENPOLICY_PREWARM=0 turns it off for every run that sees it (the unit tests: their runs
    mostly stop in the preflight, where the prewarm is CPU taken from the tests beside them).
    """
    if _PREWARM_STATE["looked"] or TaskContext is None or strategy._run_play_context is None:
        return
    _PREWARM_STATE["looked"] = True
    if not boolean(os.environ.get("OPENPOLICY_PREWARM", "1"), strict=False):
        return
    for host in hosts:
        try:
            task_vars = strategy._variable_manager.get_vars(play=iterator._play, host=host)
        except Exception:  # no prewarm for a host whose variables cannot be read yet
            continue
        if str(task_vars.get("ansible_connection", "")) != "local":
            continue
        try:
            templar = Templar(strategy._loader, variables=task_vars)
            wanted = boolean(templar.template(task_vars.get("openpolicy_prewarm", True)), strict=False)
            interpreter = templar.template(task_vars.get("ansible_python_interpreter", ""))
        except Exception:
            continue
        if not wanted:
            continue
        target = str(interpreter)
        if target in _PREWARMING:
            continue
        block = Block(play=iterator._play)
        task = Task(block=block)
        task.action = "ansible.builtin.ping"
        task.name = "Start the host's Python"
        task.args = {}
        task.set_loader(strategy._loader)
        block.block = [task]
        pid = os.fork()
        if pid == 0:
            _prewarm_in_child(strategy, host, task, task_vars)
        _PREWARMING[target] = pid
        # Registered after Mitogen's own exit handler (its worker model exists by now), so run
        # before it: a connection still being made when the multiplexer is told to shut down
        # held the run's exit for Mitogen's 5 s shutdown timeout (a preflight that fails at once).
        atexit.register(_wait_for_prewarms)


def _prewarm_in_child(strategy, host, task, task_vars) -> None:
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        mitogen.fork.on_fork()
        # A lock the controller's other thread held at the fork would stay held here forever.
        Display()._lock = threading.RLock()
        with TaskContext(task):
            TaskExecutor(
                host,
                task,
                task_vars,
                strategy._run_play_context,
                strategy._loader,
                get_plugin_loader_namespace(),
                strategy._final_q,
                strategy._variable_manager,
            ).run()
    finally:
        os._exit(0)


def _ended(pid: int) -> bool:
    """Whether the prewarm `pid` has ended (reaping it), without waiting."""
    try:
        return bool(os.waitpid(pid, os.WNOHANG)[0])
    except ChildProcessError:  # reaped already
        return True


def _wait_for_prewarms(timeout: float = PREWARM_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    for name, pid in _PREWARMING.items():
        while pid and not _ended(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = float("inf")  # reaped by the next waitpid
            time.sleep(0.01)
        _PREWARMING[name] = 0


def _reap_prewarms() -> None:
    for name, pid in _PREWARMING.items():
        if pid and _ended(pid):
            _PREWARMING[name] = 0
