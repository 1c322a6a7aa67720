"""An expected failure is one or two lines that say what failed and what to do, exit 2 (issue 24)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nobody_listening() -> str:
    with socket.socket() as s:  # bound, never listening: a connection is refused
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("command", [["incidents"], ["show", "some-incident"], ["status"], ["review", "--whitelist",
                                     str(ROOT / "deploy/demo/whitelist.yaml")]])
def test_an_unreachable_temporal_is_two_lines_and_exit_2(command, tmp_path):
    ran = subprocess.run([sys.executable, "-m", "selfheal.cli", *command, "--address", nobody_listening()],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == 2, ran.stderr
    assert len(lines) == 2 and lines[0].startswith("error: cannot reach Temporal at 127.0.0.1:"), lines
    assert lines[0].endswith(": connection refused") and "`selfheal dev` starts one" in lines[1]
    assert "Traceback" not in ran.stderr
