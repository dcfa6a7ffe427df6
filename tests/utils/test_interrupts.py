"""The stop handlers of the command line (mmix_applied.utils.interrupts): a signal raises Stopped,
except inside an atomic write, which is finished first; a second signal there stops at once; a forked
process (a loader worker) ignores them; uninstalled, nothing changes."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mmix_applied.utils import interrupts
from mmix_applied.utils.atomic import atomic_write


def _signal(signum=signal.SIGTERM):
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs between bytecodes, here


@pytest.fixture
def installed():
    restore = interrupts.install()
    yield
    restore()


def test_a_signal_raises_stopped_with_the_shells_status(installed):
    with pytest.raises(interrupts.Stopped) as stop:
        _signal(signal.SIGTERM)
    assert stop.value.exit_code == 143 and stop.value.name == "SIGTERM" and str(stop.value) == "stopped by SIGTERM"
    assert not isinstance(stop.value, Exception)  # no `except Exception` swallows it
    with pytest.raises(interrupts.Stopped) as stop:
        _signal(signal.SIGINT)
    assert stop.value.exit_code == 130 and interrupts.received() == signal.SIGTERM  # the first one received


def test_an_atomic_write_is_finished_before_the_stop_and_a_second_signal_stops_at_once(installed, tmp_path):
    def write(fh):
        fh.write(b"first half ")
        _signal()  # deferred: the write goes on
        fh.write(b"second half")

    with pytest.raises(interrupts.Stopped):
        atomic_write(tmp_path / "f.bin", write)
    assert (tmp_path / "f.bin").read_bytes() == b"first half second half"

    (tmp_path / "g.bin").write_bytes(b"previous")

    def twice(fh):
        fh.write(b"partial")
        _signal()
        _signal()  # the second: at once
        fh.write(b"never")

    with pytest.raises(interrupts.Stopped):
        atomic_write(tmp_path / "g.bin", twice)
    assert (tmp_path / "g.bin").read_bytes() == b"previous"  # the torn write was discarded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "g.bin"]


def test_a_forked_process_ignores_the_handlers_and_without_install_nothing_changes(installed):
    pid = os.fork()
    if pid == 0:  # a loader worker: the signal is ignored, it exits normally
        try:
            _signal(signal.SIGINT)
            os._exit(7)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 7


def test_without_install_python_s_own_handling_applies(tmp_path):
    assert interrupts.received() is None
    with pytest.raises(KeyboardInterrupt):
        _signal(signal.SIGINT)
    with interrupts.deferred():  # a no-op
        pass
