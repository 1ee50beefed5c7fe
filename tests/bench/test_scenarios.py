"""Scenarios: the concurrency table's numbers, rendering and files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from redline.bench.scenarios import SCENARIOS, concurrency_scenario, render_scenario, write_scenario


async def test_concurrency_scenario_numbers() -> None:
    result = await concurrency_scenario(tasks=20, task_seconds=0.05, limit=5)
    assert result["columns"] == ["strategy", "ideal_s", "measured_s", "overhead_pct"]
    rows = {row[0]: row[1:] for row in result["rows"]}
    assert set(rows) == {"serial", "gather (no limit)", "gather_limited(limit=5)"}
    serial, unbounded, limited = (
        rows["serial"],
        rows["gather (no limit)"],
        rows["gather_limited(limit=5)"],
    )
    assert serial[0] == pytest.approx(1.0)
    assert unbounded[0] == pytest.approx(0.05)
    assert limited[0] == pytest.approx(0.2)  # ceil(20 / 5) waves of 50 ms
    for ideal, measured, overhead in (serial, unbounded, limited):
        # sleeping can only be late, never early; "not blocked forever" bound on a busy box
        assert ideal * 0.98 <= measured < ideal + 5.0
        assert overhead == pytest.approx((measured - ideal) / ideal * 100)
    # the ordering the lesson teaches: unbounded < limited < serial
    assert unbounded[1] < limited[1] < serial[1]


async def test_concurrency_scenario_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="tasks and limit must be >= 1 and task_seconds > 0"):
        await concurrency_scenario(tasks=0)


async def test_scenario_table_json_and_plot(tmp_path: Path) -> None:
    result = await concurrency_scenario(tasks=4, task_seconds=0.01, limit=2)
    buffer = io.StringIO()
    render_scenario(result, Console(file=buffer, width=140))
    assert "gather_limited(limit=2)" in buffer.getvalue()
    write_scenario(result, json_path=tmp_path / "s.json", plot_path=tmp_path / "s.png")
    assert json.loads((tmp_path / "s.json").read_text())["scenario"] == "concurrency"
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_scenario_names() -> None:
    assert SCENARIOS == ("concurrency", "cache", "batching")
