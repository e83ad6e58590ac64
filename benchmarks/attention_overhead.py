"""Cost of per-filter attention in a training step (lite0, 160 px, batch 32, CPU).

Paired runs in one process: the steps being compared alternate, round after round, so
drift in machine load hits both sides alike. Reports per-step medians, every round's
times, and the median of the per-round ratios for:
  a_vs_t  attention step (train `out` attention, convs frozen) / plain full fine-tune step
  t_attached_vs_plain / f_attached_vs_plain  the same phase with and without attention
          attached (the parametrization's own cost)
Usage: python benchmarks/attention_overhead.py [--rounds 20] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from slimfg import attention, models
from slimfg.train import set_phase


def make_step(model, phase, x, y):
    params = set_phase(model, phase)
    opt = torch.optim.Adam(params, lr=1e-5)

    def step() -> float:
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 2 rounds, batch 4, 64 px")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch_size, args.image_size = 2, 4, 64
    args.out = args.out or f"benchmarks/results/attention_overhead{'_quick' if args.quick else ''}.json"

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 102, (args.batch_size,))
    plain_t = models.build(models.DEFAULT_ARCH, 102, "imagenet")
    state = plain_t.state_dict()
    variants = {}
    for name, phase, attach in [
        ("plain_f", "f", False),
        ("plain_t", "t", False),
        ("attn_f", "f", True),
        ("attn_t", "t", True),
        ("attn_a", "a", True),
    ]:
        model = models.build(models.DEFAULT_ARCH, 102, "none")
        model.load_state_dict(state)
        if attach:
            attention.attach(model, "out")
        variants[name] = make_step(model, phase, x, y)

    for step in variants.values():  # warm-up: allocator, oneDNN primitive caches
        step(), step()
    times = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(variants[name]())

    def ratio(a: str, b: str) -> float:
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b], strict=True))

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "setup": f"lite0, {args.image_size} px, batch {args.batch_size}, {args.rounds} rounds",
        "median_step_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "a_vs_t": round(ratio("attn_a", "plain_t"), 4),
        "t_attached_vs_plain": round(ratio("attn_t", "plain_t"), 4),
        "f_attached_vs_plain": round(ratio("attn_f", "plain_f"), 4),
        "a_vs_f": round(ratio("attn_a", "plain_f"), 4),
        "step_s": times,  # every round, so the ratios above can be checked
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
