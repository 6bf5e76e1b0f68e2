#!/usr/bin/env python3
"""The local cluster's helper for `make status` and the tests: a thin CLI over the one the
k8s_cluster role ships (roles/k8s_cluster/files/local_cluster.py), with this checkout's
versions.toml. Importing this module gives that one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "local_cluster", REPO / "roles" / "k8s_cluster" / "files" / "local_cluster.py"
)
_module = importlib.util.module_from_spec(_spec)
sys.modules["local_cluster"] = _module
_spec.loader.exec_module(_module)

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--versions" not in argv:
        argv += ["--versions", str(REPO / "versions.toml")]
    sys.exit(_module.main(argv))
