"""wait_for_line: how the runner and the tests wait for a process to say it is up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentplex.sim.lowlevel import NodesFailed, wait_for_line


def _start(log: Path, code: str) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-u", "-c", code], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_the_first_line_with_the_needle_comes_back(tmp_path: Path) -> None:
    log = tmp_path / "head.log"
    proc = _start(log, "import time; print('starting'); print('listening on tcp://x:1'); "
                  "time.sleep(30)")
    try:
        assert wait_for_line(log, proc, "listening on", 60) == "listening on tcp://x:1"
    finally:
        proc.kill()
        proc.wait(10)


def test_a_process_that_ends_first_fails_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "node-0.log"
    proc = _start(log, "print('no such module: opsim'); raise SystemExit(3)")
    with pytest.raises(NodesFailed, match=r"node-0 did not print 'joined'.*exit code 3"
                       r"(?s:.*)no such module: opsim"):
        wait_for_line(log, proc, "joined", 60)


def test_a_silent_process_times_out(tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    proc = _start(log, "import time; time.sleep(30)")
    try:
        with pytest.raises(NodesFailed, match=r"within 0\.3s"):
            wait_for_line(log, proc, "joined", 0.3)
    finally:
        proc.kill()
        proc.wait(10)
