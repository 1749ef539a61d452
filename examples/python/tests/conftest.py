from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # budget_server
sys.path.insert(0, str(HERE.parents[2] / "bindings" / "python" / "tests"))  # fake_provider
