"""An opt-in for end-to-end flows that are written but have not yet been seen passing here.

Such a module stays in the tree and runs with OPENPOLICY_E2E_UNPROVEN=1; `make test` skips it
with a reason that names the open issue, so CI stays a statement of what is proven. Remove the
mark from a module once it has passed.
"""

from __future__ import annotations

import os

import pytest


def not_yet_proven(issue: int, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not os.environ.get("OPENPOLICY_E2E_UNPROVEN"),
        reason=f"not yet proven end to end (issue {issue} open): {what}; run with OPENPOLICY_E2E_UNPROVEN=1",
    )
