"""The `slimfg` command line: click only.

Each command parses its options into a config and calls one job. The jobs are imported
inside the commands, so `slimfg --help` and `slimfg predict` never import torch.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from pathlib import Path

import click

from slimfg import launch
from slimfg.config import (
    BN_STATS,
    FINETUNE_EPOCHS,
    FINETUNE_STEPS,
    FORMAT_SUFFIX,
    IMPORTANCE_NAMES,
    LR_DECAYS,
    MAX_STAGES,
    PHASES,
    RUNTIMES,
    STAGED_REPAIR_DROP,
    ExportConfig,
    PruneConfig,
    TrainConfig,
    defaults,
    field_names,
    load_recipe,
    parse_lr,
)
from slimfg.errors import SlimfgError, request_stop

log = logging.getLogger("slimfg")
T, P, E = defaults(TrainConfig), defaults(PruneConfig), defaults(ExportConfig)  # option defaults
KEEP = click.FloatRange(0, 1, min_open=True)
SHARE = click.FloatRange(0, 1)


QUIET_LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "torch_pruning",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxslim",
)


class Group(click.Group):
    """Turns SlimfgError and bad option values into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SlimfgError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except click.UsageError as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slimfg")
@click.option("--verbose", is_flag=True, help="Show the libraries' own logs and warnings.")
def main(verbose: bool) -> None:
    """Adapt a pretrained CNN to a fine-grained task with per-filter attention, then
    rank, prune and export it."""
    # slimfg's own progress at INFO; the libraries' logs (torch.export's guard dumps,
    # onnxscript, ...) and warnings only with --verbose.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    log.setLevel(logging.INFO)
    if not verbose:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", module=rf"({'|'.join(QUIET_LIBRARIES)})(\.|$)")
    signal.signal(signal.SIGTERM, request_stop)  # `kill` unwinds like Ctrl-C


def run() -> None:
    """The `slimfg` command: re-run once with glibc's malloc tuned for PyTorch on CPU
    (slimfg/launch.py), then the CLI."""
    launch.reexec()
    main()


def _apply_recipe(ctx: click.Context, _param, value):
    """--recipe FILE: its keys become this command's defaults; explicit flags still win."""
    if value:
        # recipe keys are option names (--format -> format), defaults are keyed by parameter name
        params = {
            p.opts[0].lstrip("-").replace("-", "_"): p.name
            for p in ctx.command.params
            if isinstance(p, click.Option) and p.name != "recipe"
        }
        recipe = load_recipe(value, list(params))
        ctx.default_map = {**(ctx.default_map or {}), **{params[k]: v for k, v in recipe.items()}}
    return value


recipe_option = click.option(
    "--recipe",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_apply_recipe,
    help="YAML file of option defaults (keys = option names); flags override it.",
)


def schedule_options(d: dict):
    """--lr, --lr-decay, --warmup, --ema, --crop-scale, --batch-size, --workers, --seed: shared by
    `train` and `prune` (TrainConfig fields), with the defaults `d` of their config."""
    lr_help = "Learning rate, for all phases or per phase as 'f=3e-3,a=1e-2' (default: "
    lr_help += ",".join(f"{k}={v:g}" for k, v in d["lr"].items()) + ")."

    def decorate(command):
        for decorator in reversed(
            [
                click.option("--lr", default=None, help=lr_help),
                click.option(
                    "--lr-decay",
                    type=click.Choice(LR_DECAYS),
                    default=d["lr_decay"],
                    show_default=True,
                    help="Learning-rate decay over the whole schedule.",
                ),
                click.option(
                    "--warmup",
                    type=click.FloatRange(0, 1, max_open=True),
                    default=d["warmup"],
                    show_default=True,
                    help="Fraction of all batches over which the lr ramps up linearly.",
                ),
                click.option(
                    "--ema",
                    type=click.FloatRange(0, 1, max_open=True),
                    default=d["ema"],
                    show_default=True,
                    help="Per-step decay of a moving average of the weights that competes for "
                    "the kept state each epoch (0 = none).",
                ),
                click.option(
                    "--crop-scale",
                    type=click.FloatRange(0, 1, min_open=True),
                    default=d["crop_scale"],
                    show_default=True,
                    help="Smallest image-area share of a random training crop.",
                ),
                click.option(
                    "--batch-size",
                    type=click.IntRange(1),
                    default=d["batch_size"],
                    show_default=True,
                    help="Global batch size.",
                ),
                click.option(
                    "--workers",
                    type=click.IntRange(0),
                    default=d["workers"],
                    show_default=True,
                    help="Data loader worker processes.",
                ),
                click.option(
                    "--seed",
                    type=int,
                    default=d["seed"],
                    show_default=True,
                    help="Seed for init, data order and augmentation.",
                ),
            ]
        ):
            command = decorator(command)
        return command

    return decorate


@main.command()
@click.argument("data")
@recipe_option
@click.option("--out", required=True, help="Run directory (checkpoint, metrics.jsonl, model.safetensors).")
@click.option(
    "--arch",
    default=T["arch"],
    show_default=True,
    help="tf_efficientnet_lite0, a torchvision CNN or timm:<name>.",
)
@click.option("--weights", default=T["weights"], show_default=True, help="imagenet, none, or a local file.")
@click.option(
    "--schedule",
    default=T["schedule"],
    show_default=True,
    help="One epoch per letter: " + ", ".join(f"{k} = {v}" for k, v in PHASES.items()) + ".",
)
@click.option(
    "--attention",
    type=click.Choice(["out", "full", "none"]),
    default=T["attention"],
    show_default=True,
    help="Attention per filter (out), per kernel slice (full), or none.",
)
@click.option(
    "--attention-init",
    type=float,
    default=T["attention_init"],
    show_default=True,
    help="Initial attention value.",
)
@click.option(
    "--image-size", type=click.IntRange(8), default=None, help="Input size in px (default: the arch's)."
)
@schedule_options(T)
@click.option(
    "--weight-decay", type=float, default=T["weight_decay"], show_default=True, help="Optimizer weight decay."
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd"]),
    default=T["optimizer"],
    show_default=True,
    help="Optimizer, created fresh for every phase.",
)
@click.option(
    "--reg",
    type=click.Choice(["none", "l1", "mod-l2", "prune"]),
    default=T["reg"],
    show_default=True,
    help="Attention regulariser in attention phases.",
)
@click.option(
    "--reg-lambda", type=float, default=T["reg_lambda"], show_default=True, help="Regulariser weight."
)
@click.option(
    "--reg-keep",
    type=KEEP,
    default=T["reg_keep"],
    show_default=True,
    help="Channel share kept, for --reg prune.",
)
@click.option(
    "--reg-round-to",
    type=click.IntRange(1),
    default=T["reg_round_to"],
    show_default=True,
    help="Channel rounding, for --reg prune.",
)
@click.option("--device", default=T["device"], show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "none", "bf16", "fp16"]),
    default=T["amp"],
    show_default=True,
    help="Mixed precision: auto = bf16 on CUDA, fp32 on CPU; bf16 on CPU is opt-in.",
)
@click.option(
    "--val-split",
    type=float,
    default=T["val_split"],
    show_default=True,
    help="Fraction of DATA held out for validation when it has no val/ split.",
)
@click.option("--download", is_flag=True, help="Download a torchvision dataset named as DATA.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last complete epoch.")
@click.option("--teacher", default=None, help="A slimfg model to distil from (default: none).")
@click.option(
    "--distill",
    type=SHARE,
    default=T["distill"],
    show_default=True,
    help="Weight of the distillation loss against --teacher.",
)
@click.option(
    "--distill-temperature",
    type=float,
    default=T["distill_temperature"],
    show_default=True,
    help="Distillation temperature.",
)
@click.option(
    "--keep-best/--keep-last",
    default=T["keep_best"],
    show_default=True,
    help="End with the best state by val top-1 (the start included), or the last.",
)
@click.option(
    "--anchor-bn/--no-anchor-bn",
    default=T["anchor_bn"],
    show_default=True,
    help="Re-anchor BatchNorm statistics when a phase that trains BN (b, t) begins.",
)
def train(data: str, **options) -> None:
    """Train a CNN on DATA with per-filter attention and a phase schedule.

    DATA is a folder with train/ and val/ class-folder splits, one class-folder tree
    with --val-split, or a torchvision dataset name (Flowers102, OxfordIIITPet, ...).
    Launch under `torchrun --nproc_per_node N` for data-parallel training.
    """
    from slimfg.train import train as run_train

    options["lr"] = parse_lr(options["lr"], T["lr"]) if options["lr"] is not None else T["lr"]
    unknown = set(options) - set(field_names(TrainConfig))
    assert not unknown, unknown
    run_train(TrainConfig(data=data, **options))


@main.command("eval")
@click.argument("model", type=click.Path())
@click.argument("data")
@click.option(
    "--split",
    type=click.Choice(["val", "test"]),
    default="val",
    show_default=True,
    help="Which split of DATA to evaluate.",
)
@click.option("--per-class", is_flag=True, help="Also print accuracy per class, worst first.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Batch size.")
@click.option(
    "--workers", type=click.IntRange(0), default=2, show_default=True, help="Data loader worker processes."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def eval_(model, data, split, per_class, batch_size, workers, device, json_out) -> None:
    """Evaluate a slimfg MODEL on DATA: top-1 and top-5 accuracy."""
    from slimfg.evaluate import evaluate_artifact
    from slimfg.io import write_text

    result = evaluate_artifact(model, data, split, batch_size, workers, device)
    click.echo(
        f"{split}: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['images']} images)"
    )
    if per_class:
        for acc, name in sorted(zip(result["per_class"], result["classes"], strict=True)):
            click.echo(f"  {acc:6.3f}  {name}")
    if json_out:
        write_text(json_out, json.dumps(result, indent=2) + "\n")


@main.command()
@click.option(
    "--out", default="runs/demo", show_default=True, help="Run folder: new, empty, or an earlier demo's."
)
@click.option("--schedule", default="faaa", show_default=True, help="Phase schedule for the demo run.")
@click.option(
    "--image-size", type=click.IntRange(8), default=128, show_default=True, help="Input size in px."
)
@click.option("--keep", type=KEEP, default=0.6, show_default=True, help="Fraction of channels kept by prune.")
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Paired latency rounds in the bench.",
)
def demo(out: str, schedule: str, image_size: int, keep: float, rounds: int) -> None:
    """Offline demo on the bundled Flowers sample with the bundled lite0 ImageNet weights:
    train with attention -> prune + fine-tune -> export ONNX and int8 -> bench."""
    from slimfg.pipeline import demo as run_demo

    run_demo(out, schedule, image_size, keep, rounds, echo=click.echo)


@main.command()
@click.argument("model", type=click.Path())
@click.option(
    "--keep",
    type=KEEP,
    default=0.6,
    show_default=True,
    help="Fraction of channels kept, for the keep/drop lines.",
)
@click.option(
    "--keep-residual",
    type=KEEP,
    default=None,
    help="Fraction kept in residual groups (default: (1 + KEEP) / 2).",
)
@click.option(
    "--round-to",
    type=click.IntRange(0),
    default=16,
    show_default=True,
    help="Channel rounding used by prune (0 = off).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (default: 'ranking' next to MODEL).",
)
def rank(model: str, keep: float, keep_residual: float | None, round_to: int, out_dir: str | None) -> None:
    """Rank every channel of MODEL by its learned attention: ranking.json + PNG plots."""
    from slimfg.ranking import rank as run_rank
    from slimfg.ranking import summary

    result = run_rank(model, keep, out_dir, round_to or None, keep_residual)
    click.echo(summary(result))
    click.echo(f"wrote ranking.json and plots to {out_dir or Path(model).with_name('ranking')}")


@main.command()
@click.argument("model", type=click.Path())
@recipe_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pruned model (.safetensors).")
@click.option("--keep", type=KEEP, default=P["keep"], show_default=True, help="Fraction of channels kept.")
@click.option(
    "--keep-residual",
    type=KEEP,
    default=None,
    help="Fraction kept in residual groups (default: (1 + KEEP) / 2).",
)
@click.option(
    "--importance",
    default=None,
    help=f"Channel ranking: {', '.join(IMPORTANCE_NAMES)} (default: attention-taylor with "
    "--data, else attention).",
)
@click.option(
    "--global/--per-layer",
    "global_pruning",
    default=P["global_pruning"],
    help="Spend the MACs of the per-layer cut on the channels with the best score per MAC "
    "across all layers, or cut every group by the same share (default: --global with "
    "the attention-taylor ranking, which --data brings; per layer otherwise and with "
    "--target-latency).",
)
@click.option(
    "--round-to",
    type=click.IntRange(0),
    default=P["round_to"],
    show_default=True,
    help="Keep channel counts multiples of N (0 = off).",
)
@click.option(
    "--protect-stem/--prune-stem",
    default=P["protect_stem"],
    show_default=True,
    help="Leave the stem stage unpruned.",
)
@click.option("--data", help="Dataset for accuracy, calibration and fine-tuning (default: none).")
@click.option(
    "--finetune",
    default=None,
    help="Fine-tune schedule after the repair, '' for none (default with --data: 't' x epochs "
    f"for about {FINETUNE_STEPS} steps, {FINETUNE_EPOCHS[0]} to {FINETUNE_EPOCHS[1]} epochs).",
)
@click.option(
    "--stages",
    type=click.IntRange(1, MAX_STAGES),
    default=None,
    help=f"Cut to --keep in 1 to {MAX_STAGES} stages, each repaired and fine-tuned (default with --data: 2 "
    f"where one cut's repair loses more than {100 * STAGED_REPAIR_DROP:.0f} points of val top-1, else 1).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd"]),
    default=P["optimizer"],
    show_default=True,
    help="Fine-tune optimizer, created fresh for every phase.",
)
@schedule_options(P)
@click.option(
    "--bn-stats",
    type=click.Choice(BN_STATS),
    default=P["bn_stats"],
    show_default=True,
    help="Repair after the cut, before fine-tuning (needs --data).",
)
@click.option(
    "--calib-images",
    type=click.IntRange(1),
    default=P["calib_images"],
    show_default=True,
    help="Training images for the repair and the gradient rankings.",
)
@click.option(
    "--bn-batches",
    type=click.IntRange(0),
    default=P["bn_batches"],
    show_default=True,
    help="Training batches for --bn-stats recal.",
)
@click.option(
    "--distill",
    type=SHARE,
    default=P["distill"],
    show_default=True,
    help="Weight of distillation from the unpruned model in fine-tuning.",
)
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False),
    default=None,
    help="Teacher for --distill (default: the unpruned MODEL).",
)
@click.option(
    "--keep-best/--keep-last",
    default=P["keep_best"],
    show_default=True,
    help="End fine-tuning with the best state by val top-1 (the repaired start included).",
)
@click.option(
    "--latency/--no-latency",
    default=P["latency"],
    show_default=True,
    help="Measure ONNX Runtime CPU latency before and after.",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 100),
    default=None,
    help="Instead of --keep: the smallest model within this many points of val top-1, pruned "
    "in stages (needs --data; writes OUT_frontier.json/.png).",
)
@click.option(
    "--target-macs",
    type=KEEP,
    default=None,
    help="Instead of --keep: the keep whose MACs are at most this share of the model's.",
)
@click.option(
    "--target-latency",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Instead of --keep: the keep whose latency on --runtime at --batch is at most this (ms).",
)
@click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=P["runtime"],
    show_default=True,
    help="Where --target-latency and the --max-drop frontier time the model (this CPU).",
)
@click.option(
    "--batch", type=click.IntRange(1), default=P["batch"], show_default=True, help="Batch size for --runtime."
)
@click.option("--quick", is_flag=True, help="--max-drop with 1-epoch stages: a first look.")
@click.pass_context
def prune(ctx: click.Context, model: str, **options) -> None:
    """Remove the lowest-ranked channels of MODEL with dependency-aware structured pruning
    (torch-pruning), repair, optionally fine-tune, and report params, MACs and accuracy.

    How much to cut: --keep, or a budget: --max-drop, --target-macs or --target-latency."""
    from slimfg.pipeline import prune_artifact

    budgets = [k for k in ("max_drop", "target_macs", "target_latency") if options[k] is not None]
    if budgets and ctx.get_parameter_source("keep") == click.core.ParameterSource.COMMANDLINE:
        raise SlimfgError(f"--keep and --{budgets[0].replace('_', '-')} are alternatives; give one")
    options["lr"] = parse_lr(options["lr"], P["lr"]) if options["lr"] is not None else P["lr"]
    options["round_to"] = options["round_to"] or None
    report = prune_artifact(PruneConfig(model=model, **options))
    before, after = report["before"], report["after"]
    click.echo(f"{'':14}{'before':>14}{'after':>14}{'ratio':>8}")
    for key in ("params", "macs", "weights_bytes", "val_top1", "test_top1", "latency_b1_s", "latency_b32_s"):
        if key in before:
            b, a = before[key], after[key]
            fmt = "{:14,d}" if isinstance(b, int) else "{:14.4f}"
            click.echo(f"{key:14}{fmt.format(b)}{fmt.format(a)}{a / b:8.3f}")
    stages = report.get("stages")
    if stages and stages["count"] > 1:
        lost = 100 * stages["repair_drop"]
        steps = ", ".join(f"{row['macs_ratio']:.3f}x (val top-1 {row['val_top1']:.4f})"
                          for row in stages["stages"][:-1])  # fmt: skip
        click.echo(f"cut in {stages['count']} stages (one cut's repair lost {lost:.1f} points of val top-1): "
                   f"first to {steps}")  # fmt: skip
    search = report.get("search")
    if search and "probes" in search:
        click.echo(f"keep {search['keep']} meets {search['target']} ({len(search['probes'])} probes)")
    elif search:
        chosen, frontier = search["points"][search["chosen"]], Path(options["out"]).stem + "_frontier"
        click.echo(f"stage {search['chosen']} of {len(search['points']) - 1} kept: keep {chosen['keep']}, "
                   f"{chosen['macs_ratio']:.3f}x MACs; frontier in {frontier}.json and .png")  # fmt: skip
    click.echo(f"wrote {options['out']}")


def _batch_profile(_ctx, _param, value) -> tuple[int, int, int]:
    if isinstance(value, (list, tuple)):  # from a recipe
        value = ",".join(str(v) for v in value)
    try:
        lo, opt, hi = (int(v) for v in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"expected min,opt,max batch sizes, got {value!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise click.BadParameter(f"need 1 <= min <= opt <= max, got {value!r}")
    return lo, opt, hi


@main.command()
@click.argument("model", type=click.Path())
@recipe_option
@click.option(
    "--format", "fmt", default="onnx", show_default=True, help=f"One of {', '.join(FORMAT_SUFFIX)}."
)
@click.option("--out", type=click.Path(dir_okay=False), help="Output file (default: next to MODEL).")
@click.option("--data", help="Dataset whose val images verify the export (default: bundled sample).")
@click.option("--calib", help="Dataset whose train images calibrate int8 (default: none).")
@click.option(
    "--calib-images",
    type=click.IntRange(1),
    default=E["calib_images"],
    show_default=True,
    help="Calibration images.",
)
@click.option(
    "--verify-images",
    type=click.IntRange(1),
    default=E["verify_images"],
    show_default=True,
    help="Real images to verify on.",
)
@click.option(
    "--min-agreement",
    type=SHARE,
    default=E["min_agreement"],
    show_default=True,
    help="Least int8/trt top-1 agreement with fp32.",
)
@click.option(
    "--static-batch", type=click.IntRange(1), default=None, help="Fix the batch dimension (default: dynamic)."
)
@click.option("--fp16", is_flag=True, help="trt, trt-rtx: build an fp16 engine.")
@click.option("--int8", is_flag=True, help="trt, trt-rtx, executorch, tflite: int8 (needs --calib).")
@click.option(
    "--batch",
    default="1,8,32",
    show_default=True,
    callback=_batch_profile,
    help="trt: optimisation profile min,opt,max batch.",
)
def export(model: str, fmt: str, out: str | None, **options) -> None:
    """Export MODEL (a slimfg .safetensors) to a deployable format, verified against
    PyTorch (or ONNX Runtime) on real images; the numbers are printed and stored."""
    from slimfg.pipeline import default_export_path, export_artifact

    if out is None and fmt in FORMAT_SUFFIX:
        out = default_export_path(model, fmt, options["int8"])
    result = export_artifact(model, fmt, out or "", ExportConfig(**options))
    v = result.verification
    line = f"{fmt}: {result.path} ({result.bytes / 1e6:.2f} MB), "
    if "max_abs_diff" not in v:  # trt-rtx without a GPU: built, not run
        click.echo(line + f"built in {v['build_s']:.1f} s ({v['precision']}); not run: no CUDA GPU here")
        return
    line += f"vs {v.get('reference')} on {v.get('images')} "
    line += f"real images: max abs diff {v['max_abs_diff']:.2e} (logit range {v['logit_range']:.1f}), "
    line += f"top-1 agreement {v['top1_agreement']:.1%}"
    if "val_top1" in v:
        line += f"; val top-1 {v['val_top1']:.4f} (fp32 {v['val_top1_fp32']:.4f})"
    click.echo(line)


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option(
    "--formats",
    default="onnx,onnx-int8,openvino",
    show_default=True,
    help="Comma-separated formats to export and time.",
)
@click.option("--data", "data_dir", help="Dataset for top-1 and int8 calibration (default: bundled sample).")
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Paired latency rounds per batch size.",
)
@click.option(
    "--out", "out_dir", default="runs/bench", show_default=True, help="Folder for bench.json and bench.png."
)
def bench(models, formats, data_dir, rounds, out_dir) -> None:
    """Export each slimfg MODEL to each format and measure them side by side: size,
    params, MACs, top-1, latency p50/p90 at batch 1 and 32 (paired runs, one process)."""
    from slimfg.bench import available_formats, table
    from slimfg.bench import bench as run_bench

    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    optional = ("openvino", "trt", "executorch", "executorch-int8", "tflite", "tflite-int8")
    skipped = [f for f in wanted if f in optional and f not in available_formats()]
    for f in skipped:
        log.warning("skipping %s: not available on this machine", f)
    rows = run_bench(list(models), [f for f in wanted if f not in skipped], data_dir, out_dir, rounds)
    click.echo(table(rows))
    click.echo(f"wrote {Path(out_dir) / 'bench.json'} and bench.png")


@main.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--top-k", type=click.IntRange(1), default=5, show_default=True, help="Labels to print per image."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(model: str, images: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Classify IMAGES with an exported slimfg ONNX MODEL (onnxruntime + numpy + pillow)."""
    from PIL import UnidentifiedImageError

    from slimfg.runtime import ImageTooLargeError, Predictor

    if not model.endswith(".onnx"):
        raise SlimfgError(f"{model} is not an ONNX file; run `slimfg export {model}` first")
    try:
        predictor = Predictor(model)
    except (FileNotFoundError, ValueError) as e:
        raise SlimfgError(str(e)) from None
    except Exception as e:  # onnxruntime cannot parse it
        raise SlimfgError(f"{model} is not a readable ONNX model: {str(e).splitlines()[0][:150]}") from None
    results = {}
    for image in images:
        try:
            results[image] = predictor.predict(image, top_k)
        except ImageTooLargeError as e:
            raise SlimfgError(f"image too large: {e}") from None
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise SlimfgError(f"cannot read image {image}: {e}") from None
    if as_json:
        click.echo(
            json.dumps({k: [{"label": lab, "probability": p} for lab, p in v] for k, v in results.items()})
        )
        return
    for image, top in results.items():
        click.echo(image)
        for label, p in top:
            click.echo(f"  {p:7.2%}  {label}")
