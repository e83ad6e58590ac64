"""Latency of exported models in ONNX Runtime on this machine (CPU)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def ort_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed_run(session, batch: np.ndarray) -> float:
    t0 = time.perf_counter()
    session.run(None, {"input": batch})
    return time.perf_counter() - t0


def paired_latency(paths: dict[str, Path], batch: int, size: int, rounds: int = 20, warmup: int = 3) -> dict:
    """Median seconds per run for each model, alternating models every round."""
    sessions = {name: ort_session(p) for name, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for s in sessions.values():
        for _ in range(warmup):
            timed_run(s, x)
    times = {name: [] for name in sessions}
    for r in range(rounds):
        for name in list(sessions) if r % 2 == 0 else reversed(list(sessions)):
            times[name].append(timed_run(sessions[name], x))
    return {
        name: {"median_s": statistics.median(t), "p90_s": float(np.percentile(t, 90))}
        for name, t in times.items()
    }
