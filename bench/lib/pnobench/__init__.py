"""PnO benchmark harness (bench/run). The testbed, the app configs and the process helpers are the app
suite's library in tests/pylib (pno_testbed, pno_apps, pnotest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "pylib"))
