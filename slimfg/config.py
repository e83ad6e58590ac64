"""Job configuration: dataclasses with code defaults; YAML recipes and CLI flags override.

Precedence: code defaults < recipe YAML < CLI flags. Recipe keys are the CLI option
names (`image-size` or `image_size`). The resolved config is written into the run dir.
Torch-free, so the CLI can read defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from slimfg.errors import SlimfgError, unknown_name

DEFAULT_ARCH = "tf_efficientnet_lite0"

PHASES = {
    "f": "classifier head only",
    "a": "attention weights only",
    "b": "BatchNorm affine only (BN in train mode)",
    "t": "everything (plain full fine-tuning)",
    "s": "attention weights and BatchNorm shifts (beta), BN statistics frozen",
    "j": "attention weights and the classifier head jointly",
}
ATTENTION_PHASES = "asj"
BN_PHASES = "bt"  # phases that run BatchNorm in train mode
ANCHOR_IMAGES = 512
# Per-phase learning rates (Adam). Attention alone (`a`) at 3e-3: on full Flowers-102 1e-2
# made val top-1 swing by 2-3 points between epochs. `j` 5e-3 and `t` 2e-3 with cosine decay:
# the best of a seeded sweep (docs/results.md, transfer_sweep); the prune fine-tune's.
DEFAULT_LR = {"f": 3e-3, "a": 3e-3, "b": 1e-3, "t": 2e-3, "s": 3e-3, "j": 5e-3}
# The default recipe of `slimfg train` (docs/method.md, "`t` at 1e-3, and one `j` epoch"):
# one epoch of the attention with the new head (`j`), then four of every weight with the
# attention attached (`tttt`, BatchNorm re-anchored first), t = 1e-3, cosine decay, the
# best epoch by val top-1 kept. In `t`, BatchNorm in train mode normalises each channel's
# scale away, so the attention stays as `j` learned it and still ranks the channels. On
# cars49, cub50 and ucmerced21 it was level with full fine-tuning (`ftttt`) within 4 test
# images; `fjttt` (one `t` epoch fewer) lost 1.6 points on cars49, and the previous
# default (`fjjtt`, t = 2e-3) 3.7 on cub50 and 6.6 on cars49.
DEFAULT_SCHEDULE = "jtttt"
TRAIN_LR = {**DEFAULT_LR, "t": 1e-3}
LR_DECAYS = ("none", "cosine")
# Repair after the cut (pruning.repair): refit, match, recal or none.
BN_STATS = ("refit", "match", "recal", "none")
# Channel rankings (pruning.importance.IMPORTANCES) and export formats (exporters.EXPORTERS)
# by name, here so that the CLI can list them without importing torch.
IMPORTANCE_NAMES = ("attention-taylor", "attention", "magnitude", "bn", "taylor", "random")
FORMAT_SUFFIX = {
    "onnx": ".onnx",
    "onnx-int8": ".onnx",
    "openvino": ".xml",
    "trt": ".engine",
    "trt-rtx": ".engine",
    "executorch": ".pte",
    "executorch-int8": ".pte",
    "tflite": ".tflite",
    "tflite-int8": ".tflite",
}


def parse_lr(text: str | float, base: dict[str, float] | None = None) -> dict[str, float]:
    """`0.01` sets every phase; `f=3e-3,a=1e-2` sets the named phases, the others keep
    `base` (default: DEFAULT_LR)."""
    text = str(text).strip()
    try:
        if "=" not in text:
            return dict.fromkeys(PHASES, float(text))
        lrs = dict(base or DEFAULT_LR)
        for part in text.split(","):
            phase, value = (s.strip() for s in part.split("="))
            if phase not in PHASES:
                raise SlimfgError(f"--lr names unknown phase {phase!r}; phases are {', '.join(PHASES)}")
            lrs[phase] = float(value)
        return lrs
    except ValueError:
        raise SlimfgError(f"--lr must be a number or 'f=3e-3,a=1e-2', got {text!r}") from None


@dataclass(kw_only=True)
class TrainConfig:
    data: str
    out: str
    arch: str = DEFAULT_ARCH
    weights: str = "imagenet"
    schedule: str = DEFAULT_SCHEDULE
    attention: str = "out"
    attention_init: float = 1.0
    image_size: int | None = None
    batch_size: int = 32
    lr: dict[str, float] = field(default_factory=lambda: dict(TRAIN_LR))
    weight_decay: float = 0.0
    optimizer: str = "adam"
    # "cosine": every phase's lr decays along one cosine over the whole schedule.
    lr_decay: str = "cosine"
    # Linear lr warm-up over this fraction of the run's batches (0 = none).
    warmup: float = 0.0
    # Smallest share of the image area a random-resized training crop may cover.
    crop_scale: float = 0.35
    reg: str = "none"
    reg_lambda: float = 0.0
    # `--reg prune`: pull to zero the channels `slimfg prune --keep reg_keep --round-to
    # reg_round_to` would remove, re-chosen from the attention at every `a` epoch.
    reg_keep: float = 0.6
    reg_round_to: int = 16
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    val_split: float = 0.0
    download: bool = False
    resume: bool = False
    # Knowledge distillation: a slimfg artifact whose predictions the student also
    # matches (loss = (1 - distill) * CE + distill * T^2 * KL at temperature T).
    teacher: str | None = None
    distill: float = 0.0
    distill_temperature: float = 2.0
    # End with the weights of the epoch (or the start) with the best val top-1.
    keep_best: bool = True
    # Per-step decay of an exponential moving average of the weights (0 = none); each epoch
    # the average competes with the trained weights for the kept state (docs/method.md).
    ema: float = 0.0
    # End early, after the first epoch whose val top-1 reaches this (`prune --max-drop` stages).
    stop_at: float | None = None
    # Before a phase that trains BatchNorm (b, t) follows one that does not: set every BN's
    # running statistics to its real input statistics on ANCHOR_IMAGES training images,
    # the function unchanged (pruning.repair.anchor_bn), so that train mode's batch
    # statistics do not suddenly change what the network computes.
    anchor_bn: bool = True

    def validate(self) -> None:
        bad = sorted(set(self.schedule) - set(PHASES))
        if not self.schedule or bad:
            raise SlimfgError(
                f"schedule {self.schedule!r} must be phase letters: "
                + ", ".join(f"{k} = {v}" for k, v in PHASES.items())
            )
        if set(ATTENTION_PHASES) & set(self.schedule) and self.attention == "none":
            raise SlimfgError("schedule has attention ('a' or 's') phases but --attention is none")
        if self.lr_decay not in LR_DECAYS:
            raise unknown_name("--lr-decay", self.lr_decay, list(LR_DECAYS))
        if not 0 <= self.warmup < 1:
            raise SlimfgError(f"--warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.ema < 1:
            raise SlimfgError(f"--ema must be in [0, 1), got {self.ema}")
        if not 0 < self.crop_scale <= 1:
            raise SlimfgError(f"--crop-scale must be in (0, 1], got {self.crop_scale}")
        if self.batch_size < 1 or self.workers < 0:
            raise SlimfgError("--batch-size must be >= 1 and --workers >= 0")
        if not 0 <= self.distill <= 1 or self.distill_temperature <= 0:
            raise SlimfgError("--distill must be in [0, 1] and --distill-temperature > 0")
        if self.distill > 0 and not self.teacher:
            raise SlimfgError("--distill needs --teacher MODEL")
        if not 0 < self.reg_keep <= 1 or self.reg_round_to < 1:
            raise SlimfgError("--reg-keep must be in (0, 1] and --reg-round-to >= 1")
        if self.reg == "prune" and self.attention == "none":
            raise SlimfgError("--reg prune needs attention (--attention out or full)")
        if self.reg != "none" and self.reg_lambda <= 0:
            raise SlimfgError(f"--reg {self.reg} needs a positive --reg-lambda")


# The fine-tune `slimfg prune --data` runs unless told otherwise (docs/method.md): full
# fine-tuning (`t`) for about FINETUNE_STEPS optimizer steps, so a small dataset gets
# more epochs than a large one: 3 epochs of Flowers-102's 6,552 images, 13 of 1,500.
FINETUNE_STEPS = 600
FINETUNE_EPOCHS = (3, 15)  # at least, at most


# `--max-drop` prunes in stages (docs/method.md, "Pruning to a budget"): each stage cuts to
# STAGE_MACS of the previous stage's MACs, repairs on at most STAGE_CALIB_IMAGES images and
# fine-tunes until val top-1 is back within budget (at most the default fine-tune), down
# to MIN_MACS of the dense model.
STAGE_MACS = 0.7
STAGE_CALIB_IMAGES = 512
MIN_MACS = 0.1
# Stages where one cut is too deep: when the repair of the cut to --keep leaves val top-1
# more than STAGED_REPAIR_DROP under the unpruned model, the default prune cuts in two stages
# of equal MACs ratios, each repaired and fine-tuned; --stages takes 1 to MAX_STAGES
# (docs/method.md, "Stages where one cut is too deep").
STAGED_REPAIR_DROP = 0.05
MAX_STAGES = 3
# Every stage after the first fine-tunes at this share of the lr: it starts from a model
# fine-tuned already, which the full lr moved away from (docs/method.md).
LATER_STAGE_LR = 0.5
RUNTIMES = ("onnx", "onnx-int8", "openvino")  # what --target-latency / --runtime can time


def default_finetune(train_images: int, batch_size: int) -> str:
    """The default fine-tune schedule for a train split of `train_images` images."""
    steps = max(1, -(-train_images // batch_size))
    epochs = min(max(-(-FINETUNE_STEPS // steps), FINETUNE_EPOCHS[0]), FINETUNE_EPOCHS[1])
    return "t" * epochs


def default_global(importance: str, target_latency: float | None) -> bool:
    """Whether `slimfg prune` cuts with `--global` when given neither it nor `--per-layer`:
    with the attention-taylor ranking (the default with --data), where it was measured on
    the four datasets; not with --target-latency, which times per-layer copies."""
    return importance == "attention-taylor" and target_latency is None


@dataclass(kw_only=True)
class PruneConfig:
    """The `slimfg prune` job: cut, repair, fine-tune (TrainConfig fields), report."""

    model: str
    out: str
    keep: float = 0.6
    # Share kept in residual groups; None = (1 + keep) / 2 (pruning.pruner.residual_keep).
    keep_residual: float | None = None
    # None: attention-taylor when there is data to take gradients on, else attention.
    importance: str | None = None
    # None: --global when the ranking is attention-taylor (--data given) and there is no
    # --target-latency, else per layer (docs/method.md, "Where the MACs go: `--global`").
    global_pruning: bool | None = None
    round_to: int | None = 16
    protect_stem: bool = False
    data: str | None = None
    # None: default_finetune(train images) when there is data, else nothing; "" = repair only.
    finetune: str | None = None
    # The fine-tune recipe (docs/method.md, "Recovering accuracy after pruning").
    optimizer: str = "adam"
    batch_size: int = 32
    lr: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LR))
    lr_decay: str = "cosine"
    warmup: float = 0.0
    crop_scale: float = 0.35
    workers: int = 2
    seed: int = 0
    bn_stats: str = "refit"
    calib_images: int = 2048  # capped by the train split; the refit streams them (docs/method.md)
    bn_batches: int = 50
    # Distillation from the unpruned model while fine-tuning (weight of the soft-target loss).
    distill: float = 0.9
    teacher: str | None = None
    latency: bool = True
    # Fine-tuning ends with the best state by val top-1, the repaired start included.
    keep_best: bool = True
    ema: float = 0.0  # as TrainConfig.ema, for the fine-tune
    # Budgets, instead of --keep (at most one): the smallest model within `max_drop` points of
    # val top-1 (pruned in stages); or the keep that meets `target_macs` (share of the dense
    # MACs) or `target_latency` (ms on `runtime` at `batch`).
    max_drop: float | None = None
    target_macs: float | None = None
    target_latency: float | None = None
    runtime: str = "onnx"
    batch: int = 1
    # Cuts to --keep / --target-macs (1 to MAX_STAGES); None: 2 where the repair of one cut loses
    # more than STAGED_REPAIR_DROP of val top-1 (needs --data and a fine-tune), else 1.
    stages: int | None = None
    quick: bool = False  # --max-drop with 1-epoch stages, 64 repair images (CI, a first look)

    def validate(self) -> None:
        if not self.out.endswith(".safetensors"):
            raise SlimfgError(f"--out must be a .safetensors file, got {self.out}")
        if self.bn_stats not in BN_STATS:
            raise unknown_name("--bn-stats", self.bn_stats, list(BN_STATS))
        if self.finetune and not self.data:
            raise SlimfgError("--finetune needs --data DIR")
        budgets = [f"--{k}" for k in ("max-drop", "target-macs", "target-latency")
                   if getattr(self, k.replace("-", "_")) is not None]  # fmt: skip
        if len(budgets) > 1:
            raise SlimfgError(f"give one budget, not {' and '.join(budgets)}")
        if self.max_drop is not None and not self.data:
            raise SlimfgError("--max-drop needs --data DIR (accuracy is measured on its val split)")
        if self.max_drop is not None and self.finetune == "":
            raise SlimfgError("--max-drop needs a fine-tune: every stage recovers before it is judged")
        if self.target_latency is not None and self.global_pruning:
            raise SlimfgError("--target-latency works with --per-layer pruning, not --global")
        if self.stages is not None and not 1 <= self.stages <= MAX_STAGES:
            raise SlimfgError(f"--stages must be 1 to {MAX_STAGES}, got {self.stages}")
        if (self.stages or 1) > 1 and (not self.data or self.finetune == ""):
            raise SlimfgError(f"--stages {self.stages} needs --data DIR and a fine-tune: each stage recovers")
        if (self.stages or 1) > 1 and (self.max_drop is not None or self.target_latency is not None):
            raise SlimfgError(f"--stages {self.stages} works with --keep or --target-macs")
        if self.runtime not in RUNTIMES:
            raise unknown_name("--runtime", self.runtime, list(RUNTIMES))

    @property
    def schedule(self) -> str:
        """The fine-tune schedule that runs (prune_artifact fills in the default from the
        train split's size when --finetune is not given)."""
        return self.finetune or ""


@dataclass(kw_only=True)
class ExportConfig:
    """How `slimfg export` writes and verifies one format."""

    data: str | None = None  # real images to verify on (val split); the bundled sample if None
    calib: str | None = None  # int8 calibration images (train split)
    calib_images: int = 256
    verify_images: int = 32
    static_batch: int | None = None
    fp16: bool = False  # trt
    int8: bool = False  # trt
    batch: tuple[int, int, int] = (1, 8, 32)  # trt optimisation profile (min, opt, max)
    min_agreement: float = 0.9  # int8 / trt top-1 agreement below this fails the export


def load_recipe(path: str | Path, allowed: list[str]) -> dict:
    """A YAML recipe as {option_name: value}; keys may use '-' or '_'."""
    path = Path(path)
    if not path.is_file():
        raise SlimfgError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SlimfgError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SlimfgError(f"recipe {path} must be a mapping of option names to values")
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise unknown_name("recipe key", str(key), sorted(a.replace("_", "-") for a in allowed))
        out[name] = value
    return out


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def defaults(cls) -> dict:
    """{field: default} of a config dataclass: the one place the CLI reads its defaults from."""
    return {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(cls)
            if f.default is not MISSING or f.default_factory is not MISSING}  # fmt: skip
