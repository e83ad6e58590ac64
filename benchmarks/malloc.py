"""glibc's default malloc against the tunables of slimfg/launch.py, on CPU.

Runs the same slimfg commands on the bundled sample (lite0, 160 px, one data process) as
child processes, alternately with GLIBC_TUNABLES empty (glibc's defaults) and set to
launch.TUNABLES, round after round, so drift in machine load hits both sides alike:
  train   `slimfg train SAMPLE --schedule jt` (two epochs of 240 images)
  repair  `slimfg prune MODEL --keep 0.6 --data SAMPLE --finetune ''` (ranking and refit)
Per run: wall, user and system CPU seconds, minor page faults and peak RSS (os.wait4), and
for each command the median ratio tuned / default. JSON after every run.
Usage: python benchmarks/malloc.py [--rounds 2] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine, write_json

from slimfg.launch import TUNABLES

SAMPLE = Path(__file__).parent.parent / "slimfg" / "samples" / "flowers10"
SETTINGS = {"default": "", "tuned": TUNABLES}


def timed(cmd: list[str], tunables: str) -> dict:
    env = {**os.environ, "GLIBC_TUNABLES": tunables}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, use = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return {
        "wall_s": round(wall, 2),
        "user_s": round(use.ru_utime, 2),
        "sys_s": round(use.ru_stime, 2),
        "minor_faults": use.ru_minflt,
        "peak_rss_mb": use.ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: train only, 1 round, 64 px, 1 epoch"
    )
    args = parser.parse_args()
    schedule = "f" if args.quick else "jt"
    if args.quick:
        args.rounds, args.image_size = 1, 64
    out = Path(args.out or RESULTS / f"malloc{'_quick' if args.quick else ''}.json")
    slimfg = [sys.executable, "-m", "slimfg"]
    doc = {
        "machine": machine(),
        "setup": f"lite0, {args.image_size} px, bundled sample, --workers 0, {args.rounds} rounds",
        "tunables": TUNABLES,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "dense" / "model.safetensors"
        commands = {
            "train": lambda i: [*slimfg, "train", str(SAMPLE), "--image-size", str(args.image_size),
                                "--schedule", schedule, "--workers", "0", "--out", f"{tmp}/train{i}"],
            "repair": lambda i: [*slimfg, "prune", str(dense), "--keep", "0.6", "--data", str(SAMPLE),
                                 "--finetune", "", "--no-latency", "--workers", "0", "--out",
                                 f"{tmp}/pruned{i}.safetensors"],
        }  # fmt: skip
        if args.quick:  # the repair takes minutes even at 64 px
            del commands["repair"]
        else:  # the model the repair prunes (not timed)
            subprocess.run([*commands["train"]("_")[:-1], str(dense.parent)], check=True, capture_output=True)
        i = 0
        for r in range(args.rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for name in commands:
                for setting in order:
                    row = {"round": r, "command": name, "malloc": setting}
                    row.update(timed(commands[name](i), SETTINGS[setting]))
                    i += 1
                    doc["runs"].append(row)
                    print(row, flush=True)
                    write_json(out, doc)
    doc["summary"] = {}
    for name in commands:
        by = {s: [r for r in doc["runs"] if r["command"] == name and r["malloc"] == s] for s in SETTINGS}
        doc["summary"][name] = {
            f"{key}_tuned_vs_default": round(
                statistics.median(
                    t[key] / max(d[key], 1e-9) for d, t in zip(by["default"], by["tuned"], strict=True)
                ),
                3,
            )
            for key in ("wall_s", "user_s", "sys_s", "minor_faults", "peak_rss_mb")
        }
    doc["complete"] = True
    write_json(out, doc)
    print(doc["summary"])


if __name__ == "__main__":
    main()
