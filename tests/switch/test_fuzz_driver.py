"""`./run fuzz` (tests/fuzz/run.py) works: a short run of each fuzzer finds nothing and
says how many inputs it tried (the long run is the command, not the suite)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IMPLS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(IMPLS.get("c") is None, reason="extension not built")
def test_fuzz_driver_runs_each_fuzzer_and_reports():
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz" / "run.py"), "3",
                        "--seed", "5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("fuzz: seed 5")
    for name in ("packets", "openflow"):
        done = [ln for ln in lines if ln.startswith(name + ": ") and "inputs" in ln]
        assert done and int(done[0].split()[1]) > 100 and done[0].endswith("no failure")
