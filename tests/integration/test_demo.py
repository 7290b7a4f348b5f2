"""The demo of the manual's getting-started page: ``python scripts/demo.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def demo(bootstrap: str) -> dict[str, int]:
    """Run the demo on ``bootstrap``; the count it printed for each word."""
    done = subprocess.run([sys.executable, str(DEMO)], check=False, capture_output=True,
                          text=True, timeout=400,
                          env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert done.returncode == 0, done.stdout + done.stderr
    return {word: int(count) for word, count in
            re.findall(r"^(\w+) +(\d+)  slot", done.stdout, re.MULTILINE)}


def test_the_demo_runs_again_on_a_broker_that_has_the_counts_of_an_earlier_run(
        kafka_bootstrap: str) -> None:
    first = demo(kafka_bootstrap)
    assert first["the"] >= 4 and first["fox"] >= 2
    second = demo(kafka_bootstrap)
    assert second["the"] == first["the"] + 4
    assert second["fox"] == first["fox"] + 2
