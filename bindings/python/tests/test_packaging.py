"""The licence is Apache-2.0 everywhere: the repository's LICENSE, the copy the Python
distribution packs (bindings/python/LICENSE), pyproject.toml, the npm package.json, and the
metadata of the installed distribution."""
from __future__ import annotations

import json
import os
import re
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_license_file_is_apache_2_and_the_python_copy_is_identical() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    assert (ROOT / "bindings" / "python" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_package_manifests_declare_apache_2() -> None:
    pyproject = (ROOT / "bindings" / "python" / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = \{ text = "Apache-2.0" \}$', pyproject, re.M)
    assert "License :: OSI Approved :: Apache Software License" in pyproject
    assert re.search(r'^sdist\.include = \[.*"/LICENSE".*\]', pyproject, re.M)
    package = json.loads((ROOT / "bindings" / "node" / "package.json").read_text(encoding="utf-8"))
    assert package["license"] == "Apache-2.0" and "LICENSE" in package["files"]
    lock = json.loads((ROOT / "bindings" / "node" / "package-lock.json").read_text(encoding="utf-8"))
    assert lock["packages"][""]["license"] == "Apache-2.0"


@pytest.mark.skipif(not os.environ.get("BUDGET_PY_INSTALLED"), reason="checks the installed distribution (test.sh)")
def test_installed_distribution_carries_the_license() -> None:
    dist = metadata.distribution("libbudget")
    assert dist.metadata["License"] == "Apache-2.0"
    files = [f for f in (dist.files or []) if f.name == "LICENSE"]
    assert files, "no LICENSE in the installed distribution"
    assert Path(str(files[0].locate())).read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_sdist_carries_the_license_and_nothing_of_a_local_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = pytest.importorskip("scikit_build_core.build")
    monkeypatch.chdir(ROOT / "bindings" / "python")
    name = build.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
        assert "LICENSE" in names and "src/native.cpp" in names and "budget/__init__.py" in names
        assert not [n for n in names if n.startswith((".venv/", "build/"))]  # test.sh's venv, CMake builds
        member = tar.extractfile(name[: -len(".tar.gz")] + "/LICENSE")
        assert member is not None and member.read() == (ROOT / "LICENSE").read_bytes()
