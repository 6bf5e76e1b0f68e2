"""Filters of roles/release_promotion, over plugins/module_utils/openpolicy_drift.py.

- ``openpolicy_promotion_input_errors``: what is wrong with promote.yml's extra-vars, one line each.
- ``openpolicy_promotion_errors``: why a live set cannot be promoted, one line each.
- ``openpolicy_pins_text``: an inventory's services.yml with its version pins replaced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The module_utils file is the one place of this logic (the module openpolicy_drift imports it
# as ansible.module_utils.openpolicy_drift); a filter loads it by path until the collection
# layout lets both import it by its collection name.
_SPEC = importlib.util.spec_from_file_location(
    "openpolicy_drift", Path(__file__).resolve().parent.parent / "module_utils" / "openpolicy_drift.py"
)
_DRIFT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_DRIFT)


class FilterModule:
    def filters(self) -> dict:
        return {
            "openpolicy_promotion_input_errors": _DRIFT.promotion_input_errors,
            "openpolicy_promotion_errors": _DRIFT.promotion_errors,
            "openpolicy_pins_text": _DRIFT.pins_text,
        }
