"""Settings for every test of tests/unit."""

import os

# The playbooks these tests run mostly stop in the preflight or run no module on the control
# host: the strategy's prewarm of its Python (plugins/strategy/mitogen_linear_unpinned.py) would
# start one for nothing, and make the run's exit wait for it, in each of some hundred runs.
# tests/unit/test_bootstrap.py turns it back on where it tests it.
os.environ["OPENPOLICY_PREWARM"] = "0"
