"""The Python examples of README.md and docs/python.md, run as written (with stand-ins for
what they leave to the application: the provider's stream, the cost of a chunk, the final
usage), so the documentation keeps matching the API."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import budget

ROOT = Path(__file__).resolve().parents[3]


def blocks(doc: str, lang: str) -> List[str]:
    return re.findall(r"^```" + lang + r"\n(.*?)^```", (ROOT / doc).read_text(encoding="utf-8"), re.S | re.M)


def block_with(doc: str, needle: str, lang: str = "python") -> str:
    found = [b for b in blocks(doc, lang) if needle in b]
    assert len(found) == 1, f"{doc}: one ```{lang} block containing {needle!r}"
    return found[0]


def stand_ins() -> Dict[str, Any]:
    return {
        "stream": ["Hel", "lo", " world"],
        "cost_of": lambda chunk: "0.0008",
        "provider_usage": budget.Usage(input_tokens=1100, output_tokens=640),
        "final_usage": budget.Usage(input_tokens=1100, output_tokens=640),
    }


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def test_readme_example_runs(in_tmp: Path) -> None:
    ns = stand_ins()
    exec(compile(block_with("README.md", "budget.BudgetManager("), "README.md", "exec"), ns)
    receipt = ns["receipt"]
    assert receipt.charged == budget.money("0.00915")  # gpt-4o: 1100 x $2.50/M + 640 x $10/M
    assert not receipt.over_limit
    assert ns["h"].receipt is not None  # the `with m.hold(...)` block committed
    ns["m"].close()


def test_python_md_manager_lifecycle_hold_and_pricing(in_tmp: Path) -> None:
    (in_tmp / "limits.toml").write_text(block_with("docs/python.md", "[defaults.user]", "toml"))
    ns = stand_ins()
    # What the pricing block's placeholders stand for.
    ns["response_dict_or_json"] = {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    ns["raw_sse_bytes"] = b'data: {"type":"message_start","message":{"usage":{"input_tokens":9}}}\n\n'
    ns["event_dict"] = {"type": "message_delta", "usage": {"output_tokens": 3}}
    for needle in ("m = budget.BudgetManager(", 'request_id="req-1"', "with m.hold(", "budget.PricingEngine.bundled()"):
        exec(compile(block_with("docs/python.md", needle), f"docs/python.md ({needle})", "exec"), ns)
    m = ns["m"]
    assert ns["receipt"].charged > 0 and ns["h"].receipt is not None
    assert [e.type for e in m.events(request_id="req-2")] == ["reserve", "release"]
    assert m.verify().ok
    m.close()
