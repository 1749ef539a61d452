"""The .pyi stubs match the runtime (stubtest) and type-check the examples (mypy --strict)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import budget

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

# pybind11 classes differ from stubs in ways that are not API: their metaclass, and the
# generic __init__(*args, **kwargs) of classes that cannot be constructed from Python.
_PYBIND_NOISE = (re.compile(r"is inconsistent, metaclass differs"),
                 re.compile(r"__init__ is inconsistent, stub does not have \*args parameter"))


def test_installed_package_is_under_test() -> None:
    if os.environ.get("BUDGET_PY_INSTALLED"):
        assert "site-packages" in budget.__file__ or "dist-packages" in budget.__file__, budget.__file__
    assert (Path(budget.__file__).parent / "py.typed").exists()
    assert (Path(budget.__file__).parent / "_native.pyi").exists()


def test_stubtest_matches_runtime() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "budget", "--concise"],
                         capture_output=True, text=True, timeout=300, cwd=str(HERE.parent.parent))
    errors = [line for line in out.stdout.splitlines()
              if line.startswith("budget") and not any(p.search(line) for p in _PYBIND_NOISE)]
    assert not errors, "\n".join(errors)


def test_mypy_strict_on_package_examples_and_tests() -> None:
    targets = [str(p) for p in sorted((ROOT / "examples" / "python").rglob("*.py"))]
    targets += [str(HERE / "test_manager.py"), str(HERE / "test_pricing_usage.py"), str(HERE / "test_service_tier.py"),
                str(HERE / "test_binding_parity.py")]
    if not targets:
        pytest.fail("nothing to type-check")
    for args in (["-p", "budget"], targets):  # mypy takes a package or files, not both
        out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                              "--ignore-missing-imports", *args],
                             capture_output=True, text=True, timeout=600, cwd=str(HERE))
        assert out.returncode == 0, out.stdout + out.stderr
