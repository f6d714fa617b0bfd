"""The C fast path under AddressSanitizer and UndefinedBehaviorSanitizer: a separate
build (switch/csrc/sanitize.sh) runs the C side of the other fast path tests."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "switch" / "csrc" / "sanitize.sh"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_fastpath_under_asan_and_ubsan():
    if os.environ.get("KP_FASTPATH_SO"):
        pytest.skip("already running under the sanitizer build")
    # A hang guard, not a time limit: the sanitized run takes 2 to 6 minutes here,
    # depending on what else the machine runs.
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert "AddressSanitizer" not in out and "runtime error" not in out, out[-6000:]
    assert r.returncode == 0, out[-6000:]
    assert " passed" in out and "failed" not in out, out[-3000:]
