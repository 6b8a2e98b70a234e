"""Keeps `make bench` working: the whole harness in smoke mode (tiny data, one-second runs).
It asserts that every scenario ran and answered without errors, never how fast."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_harness_runs_every_scenario_without_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    summary = json.loads(lines[-1])
    assert summary == {"errors": 0, "scenarios": 8}, done.stdout
    assert any("pgbench tpcb-like" in line for line in lines), done.stdout
