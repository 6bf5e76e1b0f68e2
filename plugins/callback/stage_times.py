"""Callback plugin: how long each stage of a run took, printed after the recap.

A stage is the part of a play's name before " | " (the toolkit names its plays
"Provision hosts | ...", "Deploy | ..."), so the plays of one imported playbook add up to one
line; a play named otherwise is a stage of its own. Stages are listed in the order they first
ran, with their share of the run, so an operator sees where a long site.yml spent its time.
"""

from __future__ import annotations

import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: stage_times
type: aggregate
short_description: Print the seconds each stage (play name before " | ") of a run took
description:
  - After the play recap, one line per stage (the part of a play's name before " | ") with the
    seconds its plays took and their share of the run, in the order the stages first ran.
  - Enabled in the checkout's ansible.cfg (callbacks_enabled).
"""


def stage_of(play_name: str) -> str:
    """The stage a play belongs to: its name before the first " | ", else the whole name."""
    name = play_name.strip() or "(unnamed play)"
    return name.split(" | ", 1)[0].strip() if " | " in name else name


def stage_lines(durations: dict[str, float]) -> list[str]:
    """One line per stage ("  Provision hosts      41.2 s  35 %") and the total."""
    total = sum(durations.values())
    width = max((len(stage) for stage in durations), default=0)
    lines = []
    for stage, seconds in durations.items():
        share = 100 * seconds / total if total > 0 else 0.0
        lines.append(f"  {stage:<{width}}  {seconds:7.1f} s  {share:3.0f} %")
    lines.append(f"  {'total':<{width}}  {total:7.1f} s")
    return lines


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "openpolicy.deploy.stage_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        # Insertion order is the order the stages first ran.
        self._durations: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def _close_current(self) -> None:
        if self._current is not None:
            stage, started = self._current
            self._durations[stage] = self._durations.get(stage, 0.0) + time.monotonic() - started
            self._current = None

    def v2_playbook_on_play_start(self, play) -> None:
        self._close_current()
        self._current = (stage_of(play.get_name()), time.monotonic())

    def v2_playbook_on_stats(self, stats) -> None:
        self._close_current()
        if not self._durations:
            return
        self._display.banner("STAGES (seconds each took)")
        for line in stage_lines(self._durations):
            self._display.display(line)
