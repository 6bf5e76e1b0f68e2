"""Mitogen's linear strategy without its CPU pinning (ansible.cfg's default).

On a machine with fewer than four cores, Mitogen keeps core 0 for its connection multiplexer and
pins the controller, every task's worker and what they start (helm, kubectl, psql ...) to the
one other core. On the two cores these machines have, that made every Ansible run share one
core with itself and with the other runs beside it (the end-to-end modules run two at a time):
a no-op deploy.yml and a set of 120 local tasks each took longer than without Mitogen. Here the
scheduler places every process: Mitogen's own fallback policy where the platform cannot pin.
`ANSIBLE_STRATEGY=mitogen_linear` is Mitogen's pinned strategy; `linear` is Ansible's own.
"""

from __future__ import annotations

import ansible_mitogen.affinity
import ansible_mitogen.loaders
import ansible_mitogen.strategy

# Read at call time by Mitogen's controller, multiplexer and worker set-up: the base policy
# assigns nothing.
ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    """Mitogen's connection handling over Ansible's linear strategy, processes unpinned."""
