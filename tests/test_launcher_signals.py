"""The launcher's children never outlive it: SIGKILL of the launcher ends the running train.py /
test.py (Linux PR_SET_PDEATHSIG), SIGTERM stops the child with SIGTERM and waits for it.

The "launcher" here is a small script that calls ``launcher.runner.run_logged`` (the one place
children are started) on a child that records its pid and how it stopped.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux only")

CHILD = """
import os, signal, sys, time
marker = sys.argv[1]
def stop(signum, frame):
    open(marker + ".stopped", "w").write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(marker + ".pid", "w").write(str(os.getpid()))
print("child running", flush=True)
time.sleep(120)
"""

LAUNCHER = """
import sys
sys.path.insert(0, {root!r})
from launcher.runner import Stopped, run_logged
try:
    run_logged([sys.executable, {child!r}, {marker!r}], {log!r})
except Stopped:
    sys.exit(143)
"""


def start(tmp_path):
    marker = str(tmp_path / "child")
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "launch.py").write_text(textwrap.dedent(LAUNCHER.format(
        root=ROOT, child=str(tmp_path / "child.py"), marker=marker,
        log=str(tmp_path / "logs" / "run.log"))))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "launch.py")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not os.path.exists(marker + ".pid"):
        assert time.time() < deadline, "the child never started"
        time.sleep(0.05)
    time.sleep(0.3)   # the child's SIGTERM handler is installed before it writes its pid
    return proc, marker, int(open(marker + ".pid").read())


def gone(pid, seconds=10.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:   # a zombie (exited, not reaped yet) is gone
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_sigkill_of_the_launcher_ends_its_child(tmp_path):
    proc, marker, child = start(tmp_path)
    proc.kill()
    proc.wait()
    assert gone(child), "the child outlived a SIGKILLed launcher"
    assert open(marker + ".stopped").read() == str(int(signal.SIGTERM))


def test_sigterm_of_the_launcher_stops_the_child_cleanly_first(tmp_path):
    proc, marker, child = start(tmp_path)
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert gone(child, 1.0)   # the launcher waited for it
    assert open(marker + ".stopped").read() == str(int(signal.SIGTERM))
