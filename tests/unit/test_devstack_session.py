"""Stopping a service ends its whole session: a child that left the service's process group too."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from devstack.stack import Service, StackSettings, session_members

# The service: a child that moves to a process group of its own (as Airflow's task processes do),
# writes its pid, and both wait to be stopped.
SCRIPT = """
import os, sys, time
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(600)
    os._exit(0)
time.sleep(600)
"""


class Sleeper(Service):
    name = "sleeper"

    def __init__(self, settings: StackSettings, child_pidfile: Path):
        super().__init__(settings)
        self.child_pidfile = child_pidfile

    def ports(self) -> list[int]:
        return []

    def endpoint(self) -> str:
        return "nowhere"

    def command(self):
        return [sys.executable, "-c", SCRIPT, str(self.child_pidfile)], {}

    def answers(self) -> bool:
        return self.child_pidfile.exists() and bool(self.child_pidfile.read_text())


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_child_in_a_process_group_of_its_own_is_stopped_with_the_service(tmp_path):
    service = Sleeper(StackSettings(home=tmp_path), tmp_path / "child.pid")
    pid = service.spawn()
    service.wait_until_answers(time.monotonic() + 30)
    child = int(service.child_pidfile.read_text())
    assert os.getpgid(child) == child != pid  # out of reach of the service's group signal
    assert sorted(session_members(pid)) == sorted([pid, child])

    try:
        assert service.stop(timeout=5)

        deadline = time.monotonic() + 5
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child)
        assert session_members(pid) == []
        assert service.pid() is None
    finally:
        for left in session_members(pid):
            os.kill(left, signal.SIGKILL)
