"""Opt-ins for end-to-end flows that `make test` does not run yet, each naming its open issue.

- `not_yet_proven`: written but not yet seen passing here.
- `proven_but_too_slow`: seen passing here, but its minutes do not fit `make test`'s budget on
  this 2-core machine (CI's limit is 90 minutes for everything) until the provisioning it repeats
  is cut (issue 14). The figure it took is in the reason.

Both run with OPENPOLICY_E2E_UNPROVEN=1; `make test` skips them with a reason that names the open
issue, so CI stays a statement of what is proven within its budget. Remove the mark from a module
once it has passed and fits.
"""

from __future__ import annotations

import os

import pytest

OPT_IN = "OPENPOLICY_E2E_UNPROVEN"


def _opt_in(why: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.environ.get(OPT_IN), reason=f"{why}; run with {OPT_IN}=1")


def not_yet_proven(issue: int, what: str) -> pytest.MarkDecorator:
    return _opt_in(f"not yet proven end to end (issue {issue} open): {what}")


def proven_but_too_slow(issue: int, what: str, seen: str) -> pytest.MarkDecorator:
    return _opt_in(f"passed here ({seen}) but outside make test's time budget (issue {issue} open): {what}")
