"""SIGTERM (`errors.request_stop`): unwind at once where that is safe, else at the next item of
a `stoppable` loop, and never finish a file after it (docs/method.md, "SIGTERM, locks and the
DataLoader"). Real signals, real DataLoader workers, real locks."""

import os
import queue
import signal
import threading

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from slimfg import errors, io


@pytest.fixture
def sigterm(monkeypatch):
    """SIGTERM handled by slimfg's handler; the flag and the handler restored afterwards."""
    monkeypatch.setattr(errors, "_stop_requested", False)
    previous = signal.signal(signal.SIGTERM, errors.request_stop)
    yield lambda: os.kill(os.getpid(), signal.SIGTERM)
    signal.signal(signal.SIGTERM, previous)


def test_outside_a_loop_it_raises_at_once(sigterm):
    with pytest.raises(KeyboardInterrupt):
        sigterm()
        for _ in range(10_000_000):  # the handler runs between two bytecodes, long before the end
            pass
    assert errors._stop_requested


def test_inside_a_dataloader_loop_it_raises_at_the_next_batch(sigterm):
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=1, num_workers=1)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for (x,) in errors.stoppable(loader):
            seen.append(int(x))
            if len(seen) == 3:
                sigterm()
                for _ in range(100_000):  # the handler has run by now, and raised nothing
                    pass
                seen.append("after")
    assert seen == [0, 1, 2, "after"]
    assert errors._stoppable_depth == 0


def test_inside_a_lock_it_only_sets_the_flag(sigterm):
    """Delivered while the main thread waits in queue.Queue.get (threading's Condition), the
    signal raises nothing there; the queue's lock is free afterwards."""
    q = queue.Queue()
    threading.Timer(0.2, sigterm).start()
    threading.Timer(0.6, q.put, args=("item",)).start()
    assert q.get(timeout=30) == "item"
    assert errors._stop_requested
    q.put("again")  # would block forever if the lock had been left held
    assert q.get(timeout=1) == "again"
    with pytest.raises(KeyboardInterrupt):
        errors.check_stop()


def test_no_file_is_finished_after_it(sigterm, tmp_path):
    out = tmp_path / "model.bin"
    errors._stop_requested = True  # as after a SIGTERM that came while the file was written
    with pytest.raises(KeyboardInterrupt), io.atomic_path(out) as tmp:
        tmp.write_bytes(b"weights")
    assert list(tmp_path.iterdir()) == []
