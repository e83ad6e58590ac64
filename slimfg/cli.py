"""The `slimfg` command line: thin click commands over the stage functions."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
from pathlib import Path

import click

from slimfg.config import DEFAULT_LR, LR_DECAYS, PHASES, TrainConfig, field_names, load_recipe, parse_lr
from slimfg.errors import SlimfgError, request_stop
from slimfg.models import DEFAULT_ARCH

log = logging.getLogger("slimfg")


class Group(click.Group):
    """Turns SlimfgError into one line on stderr and exit code 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SlimfgError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slimfg")
def main() -> None:
    """Adapt a pretrained CNN to a fine-grained task with per-filter attention, then
    rank, prune and export it."""
    # slimfg's own progress at INFO; libraries (onnxscript, onnx_ir, ...) only warnings.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, request_stop)  # `kill` unwinds like Ctrl-C


def _apply_recipe(ctx: click.Context, _param, value):
    """--recipe FILE: its keys become this command's defaults; explicit flags still win."""
    if value:
        allowed = [p.name for p in ctx.command.params if p.name not in ("recipe", "data")]
        ctx.default_map = {**(ctx.default_map or {}), **load_recipe(value, allowed)}
    return value


LR_HELP = (
    "Learning rate: one number for every phase, or per phase as 'f=3e-3,a=1e-2'. Default "
    + ",".join(f"{k}={v:g}" for k, v in DEFAULT_LR.items())
    + "."
)


def schedule_options(command):
    """--lr-decay, --warmup and --crop-scale, shared by `train` and `prune` (TrainConfig fields)."""
    command = click.option(
        "--crop-scale",
        type=float,
        default=0.08,
        show_default=True,
        help="Smallest share of the image area a random training crop covers (0.08 = the ImageNet "
        "recipe; e.g. 0.35 augments more mildly, which suits a short fine-tune).",
    )(command)
    command = click.option(
        "--warmup",
        type=float,
        default=0.0,
        show_default=True,
        help="Ramp the lr up linearly over this fraction of all training batches (0.1 = the first "
        "tenth of the schedule); spares a freshly pruned model Adam's large first steps.",
    )(command)
    return click.option(
        "--lr-decay",
        type=click.Choice(list(LR_DECAYS)),
        default="none",
        show_default=True,
        help="cosine: every phase's lr falls along one cosine from its --lr value at the start of the "
        "schedule to 0 at its end (per batch); none: constant lr.",
    )(command)


@main.command()
@click.argument("data")
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_apply_recipe,
    help="YAML file of option defaults (keys = option names); flags override it.",
)
@click.option("--out", required=True, help="Run directory (checkpoint, metrics.jsonl, model.safetensors).")
@click.option(
    "--arch",
    default=DEFAULT_ARCH,
    show_default=True,
    help="tf_efficientnet_lite0, a torchvision CNN (resnet50, ...) or timm:<name>.",
)
@click.option(
    "--weights",
    default="imagenet",
    show_default=True,
    help="imagenet, none, or a local .safetensors/.pth file.",
)
@click.option(
    "--schedule",
    default="faaaa",
    show_default=True,
    help="One epoch per letter: " + "; ".join(f"{k} = {v}" for k, v in PHASES.items()) + ".",
)
@click.option(
    "--attention",
    type=click.Choice(["out", "full", "none"]),
    default="out",
    show_default=True,
    help="Attention shape: one scale per filter (out), per kernel slice (full), or none.",
)
@click.option("--attention-init", type=float, default=1.0, show_default=True, help="Initial attention value.")
@click.option("--image-size", type=int, default=None, help="Input size in px (default: the arch's own).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Global batch size.")
@click.option("--lr", default=None, help=LR_HELP)
@click.option("--weight-decay", type=float, default=0.0, show_default=True, help="Optimizer weight decay.")
@schedule_options
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd"]),
    default="adam",
    show_default=True,
    help="Optimizer, created fresh for every phase.",
)
@click.option(
    "--reg",
    type=click.Choice(["none", "l1", "mod-l2", "prune"]),
    default="none",
    show_default=True,
    help="Regulariser on attention during 'a' phases: l1 (all filters), mod-l2, or prune "
    "(L1 on only the channels `slimfg prune --keep REG_KEEP` would cut, so pruning them costs little).",
)
@click.option("--reg-lambda", type=float, default=0.0, show_default=True, help="Regulariser weight.")
@click.option(
    "--reg-keep", type=float, default=0.6, show_default=True, help="Channel share kept, for --reg prune."
)
@click.option(
    "--reg-round-to", type=int, default=16, show_default=True, help="Channel rounding, for --reg prune."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for init, data order and augmentation."
)
@click.option("--workers", type=int, default=2, show_default=True, help="Data loader worker processes.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp",
    type=click.Choice(["auto", "none", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Mixed precision on CUDA (auto = bf16); ignored on CPU.",
)
@click.option(
    "--val-split",
    type=float,
    default=0.0,
    show_default=True,
    help="Hold out this fraction of DATA for validation when it has no val/ split.",
)
@click.option("--download", is_flag=True, help="Download a torchvision dataset named as DATA.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last complete epoch.")
@click.option("--teacher", default=None, help="A slimfg model to distil from (see --distill).")
@click.option(
    "--distill",
    type=float,
    default=0.0,
    show_default=True,
    help="Weight in [0, 1] of the distillation loss against --teacher (0 = off).",
)
@click.option(
    "--distill-temperature", type=float, default=2.0, show_default=True, help="Distillation temperature."
)
def train(data: str, **options) -> None:
    """Train a CNN on DATA with per-filter attention and a phase schedule.

    DATA is a folder with train/ and val/ class-folder splits, one class-folder tree
    with --val-split, or a torchvision dataset name (Flowers102, OxfordIIITPet, ...).
    Launch under `torchrun --nproc_per_node N` for data-parallel training.
    """
    from slimfg.train import train as run_train

    options["lr"] = parse_lr(options["lr"]) if options["lr"] is not None else dict(DEFAULT_LR)
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
@click.option("--batch-size", type=int, default=64, show_default=True, help="Batch size.")
@click.option("--workers", type=int, default=2, show_default=True, help="Data loader worker processes.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the result as JSON.")
def eval_(
    model: str,
    data: str,
    split: str,
    per_class: bool,
    batch_size: int,
    workers: int,
    device: str,
    json_out: str | None,
) -> None:
    """Evaluate a slimfg MODEL on DATA: top-1 and top-5 accuracy."""
    from slimfg.evaluate import evaluate_artifact

    result = evaluate_artifact(model, data, split, batch_size, workers, device)
    click.echo(
        f"{split}: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  ({result['images']} images)"
    )
    if per_class:
        rows = sorted(zip(result["per_class"], result["classes"], strict=True))
        for acc, name in rows:
            click.echo(f"  {acc:6.3f}  {name}")
    if json_out:
        from slimfg.artifact import write_text

        write_text(json_out, json.dumps(result, indent=2) + "\n")


@main.command()
@click.option("--out", default="runs/demo", show_default=True, help="Run directory; replaced if it exists.")
@click.option("--schedule", default="faaa", show_default=True, help="Phase schedule for the demo run.")
@click.option("--image-size", type=int, default=128, show_default=True, help="Input size in px.")
@click.option(
    "--keep", type=float, default=0.6, show_default=True, help="Fraction of channels kept by prune."
)
@click.option("--rounds", type=int, default=10, show_default=True, help="Paired latency rounds in the bench.")
def demo(out: str, schedule: str, image_size: int, keep: float, rounds: int) -> None:
    """Offline demo on the bundled Flowers sample with the bundled lite0 ImageNet weights:
    train with attention -> prune + fine-tune -> export ONNX and int8 -> bench."""
    from slimfg.bench import available_formats, table
    from slimfg.bench import bench as run_bench
    from slimfg.data import SAMPLE
    from slimfg.exporters import ExportOptions
    from slimfg.exporters import export as run_export
    from slimfg.prune import prune as run_prune
    from slimfg.train import train as run_train

    run = Path(out)
    if (run / "config.json").is_file():
        shutil.rmtree(run)
    sample = str(SAMPLE)
    click.echo(f"[1/4] train lite0 ({schedule}) on the bundled sample: {sample}")
    dense = run_train(TrainConfig(data=sample, out=out, schedule=schedule, image_size=image_size))
    click.echo(f"[2/4] prune to keep {keep} and fine-tune two epochs (distilled from the dense model)")
    pruned = run / "pruned.safetensors"
    options = {"lr": {**DEFAULT_LR, "t": 1e-3}, "distill": 0.5}
    run_prune(
        str(dense), str(pruned), keep, data_dir=sample, finetune="tt", train_options=options, latency=False
    )
    click.echo("[3/4] export the pruned model to ONNX and ONNX Runtime int8, verified")
    for fmt, path in (("onnx", run / "pruned.onnx"), ("onnx-int8", run / "pruned_int8.onnx")):
        # min_agreement 0: the demo reports int8's agreement with fp32 instead of failing on it
        export_options = ExportOptions(data=sample, calib=sample, min_agreement=0.0)
        v = run_export(str(pruned), fmt, str(path), export_options).verification
        click.echo(f"      {path}: top-1 agreement {v['top1_agreement']:.0%} with {v['reference']}")
    click.echo("[4/4] bench dense vs pruned x formats (top-1 on the sample's val split)")
    formats = [f for f in ("onnx", "onnx-int8", "openvino") if f in available_formats()]
    rows = run_bench([str(dense), str(pruned)], formats, sample, str(run / "bench"), rounds)
    click.echo(table(rows))
    click.echo(f"demo: wrote {dense}, {pruned}, ONNX files and {run / 'bench'}/bench.json + bench.png")


@main.command()
@click.argument("model", type=click.Path())
@click.option(
    "--keep",
    type=float,
    default=0.6,
    show_default=True,
    help="Fraction of channels to keep, for the keep/drop lines and kept-channel plot.",
)
@click.option(
    "--keep-residual",
    type=float,
    default=None,
    help="Fraction kept in residual groups, as in prune (default (1 + KEEP) / 2).",
)
@click.option("--round-to", type=int, default=16, show_default=True, help="Channel rounding used by prune.")
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

    if not 0 < keep <= 1:
        raise SlimfgError(f"--keep must be in (0, 1], got {keep}")
    result = run_rank(model, keep, out_dir, round_to or None, keep_residual)
    click.echo(summary(result))
    click.echo(f"wrote ranking.json and plots to {out_dir or Path(model).with_name('ranking')}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pruned model (.safetensors).")
@click.option(
    "--keep", type=float, default=0.6, show_default=True, help="Fraction of channels kept, in (0, 1]."
)
@click.option(
    "--keep-residual",
    type=float,
    default=None,
    help="Fraction of channels kept in residual groups (the channels a stage's blocks add to); "
    "default (1 + KEEP) / 2, half the cut. Lite0 at keep 0.6: 0.445x MACs and params.",
)
@click.option(
    "--importance",
    default=None,
    help="Channel ranking: attention-taylor (loss change of closing each filter's attention gate, "
    "on --calib-images training images; needs --data), attention (learned |a|), magnitude, bn, "
    "taylor (needs --data) or random. Default: attention-taylor with --data, else attention.",
)
@click.option(
    "--global/--per-layer",
    "global_pruning",
    default=False,
    show_default=True,
    help="Rank channels across all layers, or prune every group by the same fraction.",
)
@click.option(
    "--round-to",
    type=int,
    default=16,
    show_default=True,
    help="Keep channel counts multiples of N (ONNX Runtime's AVX-512 conv kernels work on blocks "
    "of 16 channels; 8 on AVX2); 0 = off.",
)
@click.option(
    "--protect-stem/--prune-stem",
    default=False,
    show_default=True,
    help="Leave the stem stage (convs above 1/4 of the input resolution) unpruned.",
)
@click.option("--data", "data_dir", help="Dataset for accuracy before/after and fine-tuning.")
@click.option("--finetune", default="", help="Fine-tune schedule after pruning, e.g. ttt (needs --data).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Fine-tune batch size.")
@click.option("--lr", default=None, help=LR_HELP)
@schedule_options
@click.option("--workers", type=int, default=2, show_default=True, help="Data loader worker processes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fine-tune seed.")
@click.option(
    "--bn-stats",
    type=click.Choice(["refit", "match", "recal", "none"]),
    default="refit",
    show_default=True,
    help="Repair after pruning, before fine-tuning (needs --data): refit = re-solve every dense "
    "conv and linear layer by least squares so its outputs match the unpruned model's on "
    "--calib-images training images (BN statistics kept); match = shift BN statistics so every kept channel "
    "leaves its BN as in the unpruned model (exact when the pruned channels are silent, see "
    "`train --reg prune`); recal = re-estimate BN statistics on --bn-batches training batches; none.",
)
@click.option(
    "--calib-images",
    type=int,
    default=512,
    show_default=True,
    help="Training images (one unaugmented batch) for --bn-stats refit and match and the taylor "
    "importances. More fit better: "
    "lite0 at 160 px, keep 0.6, before fine-tuning: 128 -> 15%, 512 -> 28%, 1024 -> 37% val "
    "top-1; refit holds the whole batch's activations (512 at 160 px: ~6 GB).",
)
@click.option(
    "--bn-batches",
    type=int,
    default=50,
    show_default=True,
    help="Batches of --data for --bn-stats recal.",
)
@click.option(
    "--distill",
    type=float,
    default=0.0,
    show_default=True,
    help="Fine-tune with knowledge distillation from the unpruned MODEL: weight of the soft-target "
    "loss in [0, 1] (0 = plain cross-entropy).",
)
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False),
    default=None,
    help="Teacher artifact for --distill (default: the unpruned MODEL).",
)
@click.option(
    "--latency/--no-latency",
    default=True,
    show_default=True,
    help="Measure ONNX Runtime CPU latency at batch 1 and 32 before and after.",
)
def prune(
    model: str,
    out: str,
    keep: float,
    keep_residual: float | None,
    importance: str | None,
    global_pruning: bool,
    round_to: int,
    protect_stem: bool,
    data_dir: str | None,
    finetune: str,
    batch_size: int,
    lr: str | None,
    lr_decay: str,
    warmup: float,
    crop_scale: float,
    workers: int,
    seed: int,
    bn_stats: str,
    calib_images: int,
    bn_batches: int,
    distill: float,
    teacher: str | None,
    latency: bool,
) -> None:
    """Remove the lowest-ranked channels of MODEL with dependency-aware structured pruning
    (torch-pruning), optionally fine-tune, and report params, MACs and accuracy."""
    from slimfg.prune import prune as run_prune

    options = {
        "batch_size": batch_size,
        "workers": workers,
        "seed": seed,
        "lr": parse_lr(lr) if lr is not None else dict(DEFAULT_LR),
        "lr_decay": lr_decay,
        "warmup": warmup,
        "crop_scale": crop_scale,
        "distill": distill,
        "teacher": teacher,
    }
    report = run_prune(
        model, out, keep, importance, global_pruning, round_to or None, data_dir, finetune, options,
        latency, bn_batches, protect_stem, bn_stats, calib_images, keep_residual,
    )  # fmt: skip
    before, after = report["before"], report["after"]
    click.echo(f"{'':14}{'before':>14}{'after':>14}{'ratio':>8}")
    for key in ("params", "macs", "weights_bytes", "val_top1", "latency_b1_s", "latency_b32_s"):
        if key in before:
            b, a = before[key], after[key]
            fmt = "{:14,d}" if isinstance(b, int) else "{:14.4f}"
            click.echo(f"{key:14}{fmt.format(b)}{fmt.format(a)}{a / b:8.3f}")
    click.echo(f"wrote {out}")


def _batch_profile(_ctx, _param, value: str) -> tuple[int, int, int]:
    try:
        lo, opt, hi = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected min,opt,max batch sizes, got {value!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise click.BadParameter(f"need 1 <= min <= opt <= max, got {value!r}")
    return lo, opt, hi


@main.command()
@click.argument("model", type=click.Path())
@click.option(
    "--format",
    "fmt",
    default="onnx",
    show_default=True,
    help="onnx (fp32), onnx-int8 (ONNX Runtime static QDQ), trt (TensorRT engine) or openvino (IR).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Output file (default: next to MODEL: .onnx, _int8.onnx, .engine or .xml).",
)
@click.option(
    "--data", "data_dir", help="Dataset whose val images verify the export (default: bundled sample)."
)
@click.option("--calib", help="Dataset whose train images calibrate int8 (onnx-int8, trt --int8).")
@click.option("--calib-images", type=int, default=256, show_default=True, help="Calibration images.")
@click.option("--verify-images", type=int, default=32, show_default=True, help="Real images to verify on.")
@click.option(
    "--min-agreement",
    type=float,
    default=0.9,
    show_default=True,
    help="int8/trt: fail when top-1 agreement with fp32 on the verification images is below this.",
)
@click.option("--static-batch", type=int, default=None, help="Fix the batch dimension (default: dynamic).")
@click.option("--fp16", is_flag=True, help="trt: build an fp16 engine.")
@click.option("--int8", is_flag=True, help="trt: build an int8 engine from the Q/DQ ONNX (needs --calib).")
@click.option(
    "--batch",
    default="1,8,32",
    show_default=True,
    callback=_batch_profile,
    help="trt: optimisation profile min,opt,max batch.",
)
def export(
    model,
    fmt,
    out,
    data_dir,
    calib,
    calib_images,
    verify_images,
    min_agreement,
    static_batch,
    fp16,
    int8,
    batch,
) -> None:
    """Export MODEL (a slimfg .safetensors) to a deployable format, verified against
    PyTorch (or ONNX Runtime) on real images; the numbers are printed and stored."""
    from slimfg.exporters import SUFFIX, ExportOptions
    from slimfg.exporters import export as run_export

    if static_batch is not None and static_batch < 1:
        raise SlimfgError(f"--static-batch must be >= 1, got {static_batch}")
    if out is None and fmt in SUFFIX:
        out = str(Path(model).with_suffix("")) + ("_int8" if fmt == "onnx-int8" else "") + SUFFIX[fmt]
    options = ExportOptions(
        data=data_dir, calib=calib, calib_images=calib_images, verify_images=verify_images,
        static_batch=static_batch, fp16=fp16, int8=int8, batch=batch, min_agreement=min_agreement,
    )  # fmt: skip
    result = run_export(model, fmt, out or "", options)
    v = result.verification
    line = (
        f"{fmt}: {result.path} ({result.bytes / 1e6:.2f} MB), vs {v.get('reference')} on {v.get('images')} "
    )
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
    help="Comma-separated formats to export and time (those not installed here are skipped).",
)
@click.option("--data", "data_dir", help="Dataset for top-1 (val split) and int8 calibration (train split).")
@click.option(
    "--rounds", type=int, default=20, show_default=True, help="Paired latency rounds per batch size."
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
    skipped = [f for f in wanted if f in ("openvino", "trt") and f not in available_formats()]
    for f in skipped:
        log.warning("skipping %s: not available on this machine", f)
    rows = run_bench(list(models), [f for f in wanted if f not in skipped], data_dir, out_dir, rounds)
    click.echo(table(rows))
    click.echo(f"wrote {Path(out_dir) / 'bench.json'} and bench.png")


@main.command()
@click.argument("model", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", type=int, default=5, show_default=True, help="Labels to print per image.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def predict(model: str, images: tuple[str, ...], top_k: int, as_json: bool) -> None:
    """Classify IMAGES with an exported slimfg ONNX MODEL (onnxruntime + numpy + pillow)."""
    from PIL import UnidentifiedImageError

    from slimfg.runtime import Predictor

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
