"""Pruning to a budget: the keep that meets a MACs or latency target (`keep_for`), the cost
functions it bisects on, and the frontier report of `slimfg prune --max-drop` (JSON + PNG).

The channel counts `prune --per-layer` leaves depend on keep, the residual rule and the
rounding, not on the ranking, so a target is solved on copies pruned by magnitude (cheap,
no data), and the real ranking then cuts the same counts.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from slimfg.bench import latency, runner_for
from slimfg.card import ModelCard
from slimfg.config import ExportConfig
from slimfg.errors import SlimfgError
from slimfg.exporters import EXPORTERS, SUFFIX, uses_int8
from slimfg.exporters.common import inputs_from_data
from slimfg.io import atomic_path, write_text
from slimfg.pruning.graph import count, example_input
from slimfg.pruning.pruner import pruned_copy

log = logging.getLogger("slimfg")

MIN_KEEP = 1 / 16


def keep_for(model: nn.Module, x: torch.Tensor, cost: Callable[[nn.Module], float], target: float,
             steps: int = 7, **prune_options) -> tuple[float, list[dict]]:  # fmt: skip
    """The largest keep in [MIN_KEEP, 1] whose pruned copy costs at most `target`; returns
    it and the probes [{keep, cost}]. A SlimfgError when no keep tried meets `target`.

    Keep is halved from 1 down to MIN_KEEP until a copy meets the target, then bisected
    (`steps` halvings) between that keep and the one before it. Cost is not monotonic at
    the bottom: a group that a tiny keep would cut to nothing is left whole, so on lite0
    keep 0.05 costs 0.27x MACs where keep 0.2 costs 0.13x. Halving from the top stops
    above that region."""
    probes = []

    def probe(keep: float) -> float:
        value = cost(model if keep >= 1 else pruned_copy(model, x, keep, **prune_options))
        probes.append({"keep": keep, "cost": value})
        return value

    hi = 1.0
    if probe(hi) <= target:
        return 1.0, probes
    while probe(hi / 2) > target:
        hi /= 2
        if hi / 2 < MIN_KEEP:
            cheapest = min(p["cost"] for p in probes)
            raise SlimfgError(f"no keep meets the target: the cheapest of keeps 1 to {hi} costs "
                              f"{cheapest:.4g} (target {target:.4g})")  # fmt: skip
    lo = hi / 2  # cost(lo) <= target < cost(hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if probe(mid) <= target else (lo, mid)
    return lo, probes


def macs_cost(dense_macs: int, size: int) -> Callable[[nn.Module], float]:
    """A model's MACs as a share of `dense_macs`."""
    x = example_input(size)
    return lambda m: count(m, x)["macs"] / dense_macs


def latency_cost(card: ModelCard, runtime: str, batch: int, data_dir: str | None,
                 rounds: int = 10) -> Callable[[nn.Module], float]:  # fmt: skip
    """A model's median latency (seconds) in `runtime` at `batch` on this machine: exported
    and verified like `slimfg export`, timed like `slimfg bench` (int8 calibrated on 64
    train images of `data_dir`, the bundled sample without one)."""
    cfg = ExportConfig(data=data_dir, calib=data_dir, min_agreement=0.0, verify_images=8, calib_images=64)
    inputs = inputs_from_data(card, cfg, uses_int8(runtime, cfg))

    def cost(model: nn.Module) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"m{SUFFIX[runtime]}"
            EXPORTERS[runtime](model.eval(), card, path, inputs, cfg)
            return latency({"m": runner_for(runtime, path)}, batch, card.size, rounds)["m"]["median_s"]

    return cost


def write_frontier(path: Path, frontier: dict) -> None:
    """The frontier as JSON (rewritten after every stage, `complete` false until the end)
    and, once complete, a PNG of val top-1 against MACs and against latency."""
    write_text(path.with_suffix(".json"), json.dumps(frontier, indent=2) + "\n")
    if frontier["complete"]:
        plot_frontier(frontier, path.with_suffix(".png"))


def plot_frontier(frontier: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, dense = frontier["points"], frontier["points"][0]
    keys = [("macs_ratio", "MACs (share of the dense model)")]
    if all(p.get("latency_s") for p in points):
        keys.append(("latency_s", f"latency on {frontier['runtime']} at batch {frontier['batch']} (ms)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        scale = 1e3 if key == "latency_s" else 1.0
        xs = [p[key] * scale for p in points]
        ax.plot(xs, [p["val_top1"] for p in points], "o-", label="stages (val top-1)")
        if frontier["floor_val_top1"] > 0:
            ax.axhline(
                frontier["floor_val_top1"], color="grey", ls="--", label=f"-{frontier['max_drop']} points"
            )
        chosen = frontier.get("chosen")
        if chosen is not None:
            p = points[chosen]
            ax.plot(p[key] * scale, p["val_top1"], "r*", ms=14, label="chosen stage")
            if "final" in frontier:  # the same structure, after the final recovery
                ax.plot(p[key] * scale, frontier["final"]["val_top1"], "g^", ms=9, label="chosen, recovered")
        ax.annotate("dense", (dense[key] * scale, dense["val_top1"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("val top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"slimfg prune --max-drop {frontier['max_drop']}: the explored frontier")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
