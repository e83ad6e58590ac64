"""Generate docs/results.md from the JSON files in benchmarks/results/ (`make results`).

Only formats what the benchmark scripts measured; a missing result file becomes a line
saying which command produces it. Regenerate after re-running any benchmark.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "results.md"

COMMANDS = {
    "transfer": "python benchmarks/transfer.py ../shared/data/flowers102",
    "transfer_sweep_cpu": [
        "python benchmarks/transfer_sweep.py ../shared/data/flowers102 --only 'joint j=5e-3 cos c35,full t=2e-3 cos c35' "
        "--workers 2 --out benchmarks/results/transfer_sweep_cpu.json",
    ],
    "transfer_sweep_h100": [
        "python benchmarks/transfer_sweep.py ../shared/data/flowers102 --procs 7 "
        "--out benchmarks/results/transfer_sweep_h100.json",
        "python benchmarks/transfer_sweep.py ../shared/data/flowers102 --procs 7 --append --seeds 3,4,5 "
        "--only 'joint j=5e-3 cos c35,full t=2e-3 cos c35' --out benchmarks/results/transfer_sweep_h100.json",
        "python benchmarks/transfer_sweep.py ../shared/data/flowers102 --procs 7 --append --seeds 0,1 "
        "--image-size 224 --only 'joint j=3e-3 cos c35,joint j=5e-3 cos c35,full t=3e-4 (slimfg default),"
        "full t=1e-3 cos c35,full t=2e-3 cos c35' --out benchmarks/results/transfer_sweep_h100.json",
    ],
    "prune_curve": "python benchmarks/prune_curve.py runs/faaaa/model.safetensors ../shared/data/flowers102",
    "prune_curve_full": "python benchmarks/prune_curve.py runs/faaaa/model.safetensors ../shared/data/flowers102 "
    "--per-class 0 --finetune ttt --lr t=2e-3 --lr-decay cosine --crop-scale 0.35 --bn-stats refit "
    "--calib-images 1024 --keeps 0.6 --importances attention,magnitude,attention-taylor,bn "
    "--out benchmarks/results/prune_curve_full.json",
    "latency": "python benchmarks/latency.py runs/faaaa/model.safetensors runs/faaaa/pruned.safetensors "
    "--data ../shared/data/flowers102",
    "prune_latency": "python benchmarks/prune_latency.py runs/faaaa/model.safetensors --round-to 1,8,16",
    "attention_overhead": "python benchmarks/attention_overhead.py",
    "malloc": "python benchmarks/malloc.py",
    "op_latency": "python benchmarks/op_latency.py runs/defaults/flowers102/model.safetensors "
    "runs/defaults/flowers102/pruned_per_layer.safetensors runs/defaults/flowers102/pruned.safetensors",
}


def load(name: str, results: Path = RESULTS) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def missing(name: str) -> list[str]:
    return [f"_Not measured yet: run `{COMMANDS[name]}`._", ""]


def note(doc: dict) -> list[str]:
    """A result file may carry a `note` on how it was measured (e.g. a shared machine)."""
    return ["", f"Note: {doc['note']}"] if doc.get("note") else []


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def transfer(doc: dict | None) -> list[str]:
    lines = ["## Transfer learning at one epoch budget", "", f"`{COMMANDS['transfer']}`", ""]
    if doc is None:
        return lines + missing("transfer")
    lines += [
        f"{doc['per_class'] or 'all'} train images per class, {doc['image_size']} px, {doc['epochs']} epochs, "
        f"lite0 with ImageNet weights, batch 32, Adam, lr {doc['lr']}"
        + (", cosine lr decay over the run" if doc.get("lr_decay", "none") != "none" else ", constant lr")
        + f", random crops of at least {doc.get('crop_scale', 0.08):.0%} of the image. Machine: {doc['machine']}.",
        "",
        "| method | schedule | trains (besides the head) | val top-1 per epoch | final val top-1 | test top-1 | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["results"].items():
        curve = " ".join(f"{100 * h['val_top1']:.1f}" for h in r["history"])
        lines.append(f"| {name} | `{r['schedule']}` | {r['trainable_params']:,} | {curve} | "
                     f"{pct(r['final_val_top1'])} | {pct(r['test_top1'])} | {r['seconds']:.0f} |")  # fmt: skip
    return lines + note(doc) + ["", "![accuracy vs epoch](../benchmarks/results/transfer.png)", ""]


def transfer_attempts(results: Path) -> list[str]:
    """Other transfer runs (transfer_*.json, e.g. another lr): one row per method."""
    files = sorted(p for p in results.glob("transfer_*.json")
                   if not p.stem.endswith("_quick") and not p.stem.startswith("transfer_sweep"))  # fmt: skip
    if not files:
        return []
    lines = [
        "### Other attempts",
        "",
        "| file | method | schedule | lr | final val top-1 | test top-1 |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for path in files:
        doc = json.loads(path.read_text())
        lr = recipe(doc, doc["lr"], ", cosine decay")
        for name, r in doc["results"].items():
            lines.append(
                f"| {path.name} | {name} | `{r['schedule']}` | {lr} | {pct(r['final_val_top1'])} | {pct(r['test_top1'])} |"
            )
        if doc.get("note"):
            notes.append(f"- {path.name}: {doc['note']}")
    return lines + ([""] + notes if notes else []) + [""]


def transfer_sweep(doc: dict | None, name: str, title: str) -> list[str]:
    """Seeded recipe sweep: mean and spread of the final val top-1 per grid row."""
    lines = [f"### {title}", "", *[f"`{c}`  " for c in COMMANDS[name]], ""]
    if doc is None:
        return lines + ["_Not measured yet: run the commands above._", ""]
    lines += [
        f"{doc['per_class']} train images per class, {doc['epochs']} epochs, val top-1 after the last epoch; "
        f'every row is one `slimfg train` recipe ("cos" = cosine lr decay, "c35" = random crops of at '
        f"least 35% of the image, 128 px unless the name says otherwise). Machine: {doc['machine']}.",
        "",
        "| recipe | schedule | runs | mean val top-1 | std | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in doc["summary"].items():
        schedule = doc["grid"][name.split("px ", 1)[-1]]["schedule"]
        runs = " ".join(f"{100 * v:.1f}" for v in r["final"])
        lines.append(
            f"| {name} | `{schedule}` | {r['n']} | {pct(r['mean'])} | {100 * r['std']:.1f} | {runs} |"
        )
    return lines + note(doc) + [""]


def prune_curve(doc: dict | None) -> list[str]:
    lines = ["## Pruning: accuracy vs MACs", "", f"`{COMMANDS['prune_curve']}`", ""]
    if doc is None:
        return lines + missing("prune_curve")
    lines += [
        f"Repair `--bn-stats {doc.get('bn_stats', 'recal')}` ({doc.get('calib_images', 512)} images), then "
        f"fine-tune `{doc['finetune']}` on {doc['per_class'] or 'all'} train images per class, distillation "
        f"weight {doc['distill']}, lr t = {doc['lr']['t']}; val top-1 on the full val split.",
        "",
        "| keep | residual keep | importance | MACs | params | val top-1 before fine-tune | val top-1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(f"| {r['keep']} | {r.get('keep_residual', r['keep'])} | {r['importance']} | "
                     f"{r['macs_ratio']:.3f}x | {r['params_ratio']:.3f}x | "
                     f"{pct(r['val_top1_no_finetune'])} | {pct(r['val_top1'])} |")  # fmt: skip
    return lines + note(doc) + ["", "![accuracy vs MACs](../benchmarks/results/prune_curve.png)", ""]


def prune_curve_full(doc: dict | None) -> list[str]:
    """The channel rankings compared at `slimfg prune`'s full fine-tune budget."""
    lines = [
        "## Channel importance at the full fine-tune budget",
        "",
        f"`{COMMANDS['prune_curve_full']}`",
        "",
    ]
    if doc is None:
        return lines + missing("prune_curve_full")
    lines += [
        f"Every ranking pruned with the same keep, repaired with `--bn-stats {doc['bn_stats']}` on "
        f"{doc['calib_images']} images, then fine-tuned with {finetune_budget(doc)}, distillation weight "
        f"{doc['distill']}. The unpruned model scores {pct(doc['rows'][0]['val_top1_unpruned'])}.",
        "",
        "| keep | residual keep | importance | MACs | params | val top-1 before fine-tune | val top-1 | gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        gap = 100 * (r["val_top1"] - r["val_top1_unpruned"])
        lines.append(f"| {r['keep']} | {r.get('keep_residual', r['keep'])} | {r['importance']} | "
                     f"{r['macs_ratio']:.3f}x | {r['params_ratio']:.3f}x | {pct(r['val_top1_no_finetune'])} | "
                     f"{pct(r['val_top1'])} | {gap:+.1f} |")  # fmt: skip
    return lines + note(doc) + [""]


def latency(doc: dict | None) -> list[str]:
    lines = ["## Deployment latency: dense vs pruned x runtime", "", f"`{COMMANDS['latency']}`", ""]
    if doc is None:
        return lines + missing("latency")
    lines += [
        f"Paired runs in one process, {doc['rounds']} rounds per batch size; p50 (p90) in ms. Speed-up is "
        "against the dense fp32 ONNX model; ideal = its MACs / this model's MACs.",
        "",
        "| variant | MB | top-1 | batch 1 | batch 32 | speed-up b32 | ideal | share of ideal | vs own fp32 (b32) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['name']} | {r['bytes'] / 1e6:.2f} | {pct(r.get('top1'))} | "
            f"{r['b1_p50_s'] * 1e3:.2f} ({r['b1_p90_s'] * 1e3:.2f}) | "
            f"{r['b32_p50_s'] * 1e3:.1f} ({r['b32_p90_s'] * 1e3:.1f}) | {r['speedup_b32']:.2f}x | "
            f"{r['ideal_speedup']:.2f}x | {100 * r['efficiency_b32']:.0f}% | {r['vs_fp32_b32']:.2f}x |"
        )
    return lines + [""]


def prune_latency(doc: dict | None) -> list[str]:
    lines = ["## Channel rounding and CPU speed-up", "", f"`{COMMANDS['prune_latency']}`", ""]
    if doc is None:
        return lines + missing("prune_latency")
    lines += [f"{doc['machine']}, {doc['image_size']} px, ONNX Runtime fp32.", "",
              "| variant | MACs | b1 ms | b32 ms | speed-up b32 | share of ideal | speed-up b1 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in doc["rows"].items():
        lines.append(f"| {name} | {r['macs_ratio']:.3f}x | {r['latency_b1_ms']} | {r['latency_b32_ms']} | "
                     f"{r['speedup_b32']:.2f}x | {100 * r['efficiency_b32']:.0f}% | {r['speedup_b1']:.2f}x |")  # fmt: skip
    return lines + [""]


def op_latency(doc: dict | None) -> list[str]:
    lines = ["## Where ONNX Runtime spends the time, by kind of op", "", f"`{COMMANDS['op_latency']}`", ""]
    if doc is None:
        return lines + missing("op_latency")
    lines += [f"{doc['machine']}, batch {doc['batch']}, median of {doc['runs']} runs per node. MACs as the "
              "kernels ran them (ONNX Runtime pads channels in its blocked layout). The last column fits "
              "time = a * MACs + b * activation elements over the conv nodes and gives b / a. The models are "
              "profiled one after another, with the profiler's overhead: compare their speed with the paired "
              "timing of `slimfg bench`, not with these totals.", "",
              "| model | ms | depthwise conv ms | other conv ms | rest ms | MACs / image | depthwise MACs | "
              "1 activation element costs |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in doc["models"].items():
        lines.append(f"| {name} | {r['ms']} | {r['dw_conv_ms']} | {r['other_conv_ms']} | {r['rest_ms']} | "
                     f"{r['macs_per_image'] / 1e6:.1f} M | {r['dw_macs_per_image'] / 1e6:.1f} M | "
                     f"{r['elem_cost_in_macs']} MACs |")  # fmt: skip
    return lines + [""]


def attention_overhead(doc: dict | None) -> list[str]:
    lines = ["## Cost of an attention training step", "", f"`{COMMANDS['attention_overhead']}`", ""]
    if doc is None:
        return lines + missing("attention_overhead")
    return lines + [
        f"{doc['setup']}, {doc['machine']}: an attention step costs {doc['a_vs_t']:.2f}x a full fine-tune "
        f"step and {doc['a_vs_f']:.1f}x a head-only step; attaching attention changes a full step by "
        f"{doc['t_attached_vs_plain']:.2f}x.",
        "",
    ]


def malloc(doc: dict | None) -> list[str]:
    lines = ["## glibc malloc tunables (slimfg/launch.py)", "", f"`{COMMANDS['malloc']}`", ""]
    if doc is None or not doc.get("complete"):
        return lines + missing("malloc")
    lines += [f"{doc['setup']}; {doc['machine']}. Tunables: `{doc['tunables']}`. Median of the paired "
              "rounds' ratios, tuned / glibc's defaults:", "",
              "| command | wall | user CPU | system CPU | minor faults | peak RSS |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in doc["summary"].items():
        lines.append(f"| {name} | {r['wall_s_tuned_vs_default']:.2f} | {r['user_s_tuned_vs_default']:.2f} | "
                     f"{r['sys_s_tuned_vs_default']:.2f} | {r['minor_faults_tuned_vs_default']:.2f} | "
                     f"{r['peak_rss_mb_tuned_vs_default']:.2f} |")  # fmt: skip
    return lines + [""]


def finetune_budget(doc: dict) -> str:
    """A prune-curve file's fine-tune budget in words, e.g. "`ttt`, all images, t=2e-3 cosine"."""
    images = f"{doc['per_class']}/class" if doc.get("per_class") else "all images"
    lr = recipe(doc, [k for k in doc["lr"] if k in doc["finetune"]], " cosine")
    return f"`{doc['finetune']}`, {images}, {lr}"


def recipe(doc: dict, phases, cosine: str) -> str:
    """The lr of `phases`, then the decay and a non-default crop scale, e.g. "t=0.002 cosine"."""
    text = ", ".join(f"{k}={doc['lr'][k]:g}" for k in phases)
    text += cosine if doc.get("lr_decay", "none") != "none" else ""
    text += f", crop scale {doc['crop_scale']:g}" if doc.get("crop_scale", 0.08) != 0.08 else ""
    return text


def prune_curve_attempts(results: Path) -> list[str]:
    """Other prune-curve runs (prune_curve_*.json, e.g. another --bn-stats): one row each."""
    files = sorted(p for p in results.glob("prune_curve_*.json") if not p.stem.endswith(("_quick", "_full")))
    if not files:
        return []
    lines = [
        "### Other repairs after pruning",
        "",
        "Same model; `repair` is `--bn-stats` (recal above); the fine-tune budget is per file.",
        "",
        "| file | repair | fine-tune | keep | residual keep | importance | MACs | val top-1 before fine-tune "
        "| val top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for path in files:
        doc = json.loads(path.read_text())
        for r in doc["rows"]:
            lines.append(
                f"| {path.name} | {doc.get('bn_stats', 'recal')} | {finetune_budget(doc)} | {r['keep']} | "
                f"{r.get('keep_residual', r['keep'])} | {r['importance']} | {r['macs_ratio']:.3f}x | {pct(r['val_top1_no_finetune'])} | "
                f"{pct(r['val_top1'])} |"
            )
        if doc.get("note"):
            notes.append(f"- {path.name}: {doc['note']}")
    return lines + ([""] + notes if notes else []) + [""]


def defaults(results: Path) -> list[str]:
    """One section per dataset run through benchmarks/defaults.py (the default CLI path)."""
    lines = []
    for path in sorted(results.glob("defaults_*.json")):
        if path.stem.endswith("_quick") and results == RESULTS:
            continue
        doc = json.loads(path.read_text())
        lines += [f"## The default path on {Path(doc['data']).name}", "",
                  f"{doc['machine']}, {doc['image_size']} px; the commands, with no other flag:", "", "```",
                  *doc["commands"], "```", "",
                  "| model | val top-1 | test top-1 | MACs | params |", "|---|---|---|---|---|"]  # fmt: skip
        dense = doc["rows"].get("dense", {})
        for row in doc["rows"].values():
            ratio = f" ({row['macs'] / dense['macs']:.3f}x)" if dense.get("macs") else ""
            lines.append(f"| {row['kind']} | {pct(row.get('val_top1'))} | {pct(row.get('test_top1'))} | "
                         f"{row['macs'] / 1e6:.1f} M{ratio} | {row['params'] / 1e6:.2f} M |")  # fmt: skip
        prune = doc.get("prune", {})
        lines += ["", f"Train schedule `{doc.get('train', {}).get('schedule')}`; after pruning and the refit, "
                  f"before fine-tuning: {pct(prune.get('refit_val_top1'))} val; fine-tune kept epoch "
                  f"{prune.get('kept_epoch')} (0 = the refitted state). Wall time: "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in doc["seconds"].items()) + ".", ""]  # fmt: skip
        stages = prune.get("stages") or {}
        if stages.get("count", 1) > 1:
            steps = "; ".join(
                f"to {row['macs_ratio']:.3f}x ({pct(row['repaired_val_top1'])} val after the "
                f"repair, {pct(row['val_top1'])} after its fine-tune)"
                for row in stages["stages"][:-1]
            )
            lines += [f"Cut in {stages['count']} stages: one cut to {stages['one_cut']['macs_ratio']:.3f}x MACs "
                      f"lost {100 * stages['repair_drop']:.1f} points of val top-1 after its repair, so the model "
                      f"was cut {steps}; then to the one cut's MACs"
                      + (f", later stages fine-tuned at {stages['later_stage_lr']:g}x the lr"
                         if stages.get("later_stage_lr") else "") + ".", ""]  # fmt: skip
        lines += [doc["note"], ""] if doc.get("note") else []
    return lines


def recipe_sweep(results: Path) -> list[str]:
    """The train-default choice (issue 14): every method on every dataset, 160 px, 5 epochs."""
    rows = []
    for path in sorted((results / "recipe_sweep").glob("*.json")):
        doc = json.loads(path.read_text())
        for name, r in doc["results"].items():
            vals = " / ".join(pct(h["val_top1"]) for h in r["history"])
            kept = r.get("kept_epoch") if doc.get("keep_best") else "last"
            rows.append(f"| {Path(doc['data']).name} | {name} | `{r['schedule']}` | {doc['lr']['t']:g} | {vals} | "
                        f"{kept} | {pct(r['test_top1'])} |")  # fmt: skip
    if not rows:
        return []
    return ["## Choosing `slimfg train`'s default recipe", "",
            "lite0 with the bundled ImageNet weights, all training images, 160 px, 5 epochs, Adam, per-phase "
            "lr f = 3e-3, j = 5e-3, t as listed, cosine decay, crop scale 0.35; `python benchmarks/transfer.py "
            "DATA --per-class 0 --image-size 160 --methods METHOD --lr f=3e-3,j=5e-3,t=T [--keep-best]` (files "
            "in benchmarks/results/recipe_sweep/, README there). `kept`: the epoch a `--keep-best` run ended "
            "with.", "",
            "| data | method | schedule | lr t | val top-1 per epoch | kept | test top-1 |",
            "|---|---|---|---|---|---|---|",
            *rows, ""]  # fmt: skip


def support(doc: dict | None) -> list[str]:
    """The support contract of every torchvision model and the timm families (issue 15)."""
    if doc is None:
        return []
    sys.path.insert(0, str(Path(__file__).parent))
    from support import table

    return ["## Supported models", "",
            "`python benchmarks/support.py` (random init, 3 classes of the bundled sample, 64 px; 96 px for "
            "inception_v3): build, attention, one epoch of phase `j`, fold, prune to keep 0.5 with the attention "
            "ranking, save, reload (outputs identical), ONNX export verified against PyTorch, Predictor top-1 "
            f"equal to PyTorch's. {doc['machine']}.", "", table(doc, by_family=False), ""]  # fmt: skip


def main() -> None:
    import argparse

    from slimfg.io import write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of benchmark JSON files")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    lines = [
        "# Results",
        "",
        "Generated by `make results` (`python benchmarks/report.py`) from benchmarks/results/*.json; "
        "each section names the command that measured it. Dataset: Oxford Flowers-102 "
        "(../shared/data/flowers102: 6,552 train, 818 val, 819 test images, 102 classes). "
        "Machine: 2 CPU cores, no GPU, except the recipe sweep marked GPU.",
        "",
    ]
    for name, section in [("transfer", transfer), ("prune_curve", prune_curve), ("latency", latency),
                          ("prune_latency", prune_latency), ("op_latency", op_latency),
                          ("attention_overhead", attention_overhead), ("malloc", malloc)]:  # fmt: skip
        lines += section(load(name, args.results))
        if name == "transfer":
            lines += transfer_sweep(
                load("transfer_sweep_h100", args.results),
                "transfer_sweep_h100",
                "Recipe sweep over seeds (GPU)",
            )
            lines += transfer_sweep(
                load("transfer_sweep_cpu", args.results),
                "transfer_sweep_cpu",
                "The two best recipes over seeds on this CPU",
            )
            lines += transfer_attempts(args.results)
        if name == "prune_curve":
            lines += prune_curve_attempts(args.results)
            lines += prune_curve_full(load("prune_curve_full", args.results))
    lines += recipe_sweep(args.results)
    lines += defaults(args.results)
    lines += support(load("support", args.results))
    write_text(args.out, "\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
