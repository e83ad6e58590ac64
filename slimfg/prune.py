"""Attention-guided structured pruning with torch-pruning, then fine-tuning.

Fold attention into the kernels, build `torch_pruning.DependencyGraph`, and prune
`1 - keep` of the channels of every dependency group (all convs coupled by a residual
add share one decision; a depthwise conv follows its producer); residual groups lose
half as much by default (`--keep-residual`). The channel ranking is
`AttentionImportance`: per-channel scores averaged over the group, either the learned
attention |a| (`attention`) or the loss change of closing each filter's attention gate
(`attention-taylor`, `attention_taylor_scores`). The pruning record is torch-pruning's
own `pruning_history()` (plain JSON), which `replay` re-applies to a fresh model when an
artifact is loaded. Before fine-tuning, `refit` re-solves the layers after each cut by
least squares so that they reproduce the unpruned model's outputs (`--bn-stats refit`,
the default).
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
import time
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from slimfg import artifact, attention, data, models
from slimfg.errors import SlimfgError, unknown_name

log = logging.getLogger("slimfg")


class AttentionImportance(tp.importance.Importance):
    """Group importance = mean per-channel score over the group's conv outputs.

    The scores are the learned attention |a| (`attention`) or the attention-gate Taylor
    scores of `attention_taylor_scores` (`attention-taylor`).
    """

    def __init__(self, scores: dict[nn.Module, torch.Tensor]) -> None:
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0].root_idxs)
        total, count = torch.zeros(n), torch.zeros(n)
        for i, (dep, idxs) in enumerate(group):
            if dep.layer in self.scores and _prunes_out(dep):
                root = torch.tensor(group[i].root_idxs, dtype=torch.long)
                total.scatter_add_(0, root, self.scores[dep.layer][idxs].float())
                count.scatter_add_(0, root, torch.ones(len(idxs)))
        if not count.any():
            return None  # no attention-scored conv in this group: torch-pruning skips it
        return total / count.clamp(min=1)


@torch.enable_grad()
def attention_taylor_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 32):
    """Per filter: how much the loss would change if its attention were set to 0.

    Molchanov et al. (2019)'s first-order Taylor importance on gates, with the attention
    module as the gate: a fresh `out` attention at 1 on every conv of the (folded) model,
    whose gradient d loss / d a_i estimates the loss change of closing filter i; the score
    is that gradient squared, summed over minibatches of `batch` images of (x, y). On a
    model trained with attention, a = 1 on the folded weights is the learned attention,
    so the gradient is a_i * d loss / d a_i of the trained gates. Weights are left unchanged.
    Returns {conv module: scores}.
    """
    attention.attach(model, "out", 1.0)
    gates = attention.modules(model)
    total = {name: torch.zeros(len(g.attention)) for name, g in gates.items()}
    was_training = model.training
    model.eval()
    try:
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            loss = nn.functional.cross_entropy(model(xb), yb)
            grads = torch.autograd.grad(loss, [g.attention for g in gates.values()])
            for name, grad in zip(gates, grads, strict=True):
                total[name] += grad.detach().flatten().pow(2).cpu()
    finally:
        attention.fold(model)  # the gates are exactly 1: the weights come back unchanged
        model.train(was_training)
    return {model.get_submodule(name): s for name, s in total.items()}


# Importances that rank from gradients on real images (`--calib-images` of --data).
GRADIENT_IMPORTANCES = ("taylor", "attention-taylor")
IMPORTANCES = {
    "attention": AttentionImportance,
    "attention-taylor": AttentionImportance,
    "magnitude": lambda _: tp.importance.GroupMagnitudeImportance(p=2),
    "bn": lambda _: tp.importance.BNScaleImportance(),
    "taylor": lambda _: tp.importance.GroupTaylorImportance(),
    "random": lambda _: tp.importance.RandomImportance(),
}


def example_input(size: int) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


def dependency_graph(model: nn.Module, size: int) -> tp.DependencyGraph:
    with torch.enable_grad():  # torch-pruning traces the graph through autograd
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input(size), verbose=False)


def replay(model: nn.Module, record: dict, size: int) -> nn.Module:
    """Re-apply a stored pruning history to a fresh, unpruned model of the same arch."""
    history = [(name, bool(out), list(idxs)) for name, out, idxs in record["history"]]
    dependency_graph(model, size).load_pruning_history(history)
    return model


def attention_scores(model: nn.Module, meta: dict) -> dict[nn.Module, torch.Tensor]:
    """The artifact's per-channel attention scores, keyed by conv module."""
    if not meta.get("attention"):
        raise SlimfgError(
            f"{meta.get('arch')} model was trained without attention; "
            "use `slimfg prune --importance magnitude` (or bn, taylor, random)"
        )
    return {model.get_submodule(name): torch.tensor(s) for name, s in meta["attention"]["scores"].items()}


def count(model: nn.Module, size: int) -> dict:
    """Parameters and multiply-accumulates (torch-pruning's counter) at batch 1."""
    macs, params = tp.utils.count_ops_and_params(model, example_input(size))
    return {"params": int(params), "macs": int(macs)}


@torch.no_grad()
def stem_convs(model: nn.Module, size: int) -> list[nn.Module]:
    """Convs whose output is larger than a quarter of the input resolution: the stem stage.

    `--protect-stem` leaves them unpruned: they hold few MACs and every later layer
    depends on their features. Off by default: on lite0 (160 px, keep 0.6) it raised
    MACs from 0.39x to 0.45x and made the pruned model slower (benchmarks/prune_latency.py).
    """
    sizes: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: sizes.__setitem__(mod, out.shape[-1]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    was_training = model.training
    try:
        model.eval()(example_input(size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [m for m, s in sizes.items() if s > size / 4]


def make_pruner(model, meta, keep, importance, global_pruning, round_to, size, protect_stem=False,
                keep_residual=None, grad_batch=None):  # fmt: skip
    """The torch-pruning pruner for `importance`; `grad_batch` = (images, labels) for the
    gradient-based importances (taylor, attention-taylor)."""
    if importance not in IMPORTANCES:
        raise unknown_name("importance", importance, list(IMPORTANCES))
    scores = None
    if importance in GRADIENT_IMPORTANCES and keep < 1:  # keep 1: nothing to rank
        if grad_batch is None:
            raise SlimfgError(f"--importance {importance} needs --data (gradients on real images)")
        x, y = grad_batch
        if importance == "attention-taylor":
            scores = attention_taylor_scores(model, x, y)
        else:  # torch-pruning's criterion reads the .grad the backward passes accumulate
            model.eval()
            for xb, yb in zip(x.split(32), y.split(32), strict=True):
                nn.functional.cross_entropy(model(xb), yb).backward()
    elif importance == "attention":
        scores = attention_scores(model, meta)
    importance = IMPORTANCES[importance](scores)
    return _pruner(model, importance, keep, global_pruning, round_to, size, protect_stem, keep_residual)


def residual_keep(keep: float, given: float | None = None) -> float:
    """The share of channels kept in residual groups: `given`, or by default half the cut
    of the others.

    A residual group is one channel of the stream that every block of a stage reads and
    adds to; cutting it removes that feature from all those blocks at once. Channel
    pruning of residual networks (He et al. 2017, ThiNet) therefore cuts inside the blocks
    and spares the stream. Lite0 on Flowers-102 at keep 0.6, refit, no fine-tuning
    (docs/method.md): 0.6 everywhere gave 0.393x MACs and 41% val top-1
    (attention-taylor), 0.6 inside the blocks and 0.8 on the streams gave 0.445x and 54%.
    """
    return (1 + keep) / 2 if given is None else given


def residual_groups(model: nn.Module, size: int, ignored: list[nn.Module]) -> list[nn.Module]:
    """Root modules of the dependency groups whose channels pass through a residual add."""
    groups = dependency_graph(model, size).get_all_groups(
        ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]
    )
    return [g[0].dep.target.module for g in groups if any(_is_add(dep.target.module) for dep, _ in g)]


def _is_add(node) -> bool:
    """A residual add in torch-pruning's graph (an element-wise op node named by its grad_fn)."""
    return isinstance(node, tp.ops._ElementWiseOp) and str(node._grad_fn).startswith("AddBackward")


def _pruner(model, importance, keep, global_pruning, round_to, size, protect_stem=False, keep_residual=None):
    if not 0 < keep <= 1:
        raise SlimfgError(f"--keep must be in (0, 1], got {keep}")
    keep_residual = residual_keep(keep, keep_residual)
    if not 0 < keep_residual <= 1:
        raise SlimfgError(f"--keep-residual must be in (0, 1], got {keep_residual}")
    head = model.get_submodule(models.classifier_name(model))
    ignored = [head, *(stem_convs(model, size) if protect_stem else [])]
    ratios = None
    if keep_residual != keep and keep < 1:
        ratios = dict.fromkeys(residual_groups(model, size, ignored), 1.0 - keep_residual)
    return tp.pruner.BasePruner(
        model,
        example_input(size),
        importance=importance,
        pruning_ratio=1.0 - keep,
        pruning_ratio_dict=ratios,
        global_pruning=global_pruning,
        # Global ranking may empty a layer that the task barely uses; keep 10% of each.
        max_pruning_ratio=0.9,
        round_to=round_to,
        ignored_layers=ignored,
    )


@torch.no_grad()
def drop_plan(
    model: nn.Module, keep: float, size: int, round_to: int | None = 16, keep_residual: float | None = None
) -> dict[str, torch.Tensor]:
    """The output channels `slimfg prune --keep K --importance attention` (per-layer) would
    remove from `model` as its attention stands now, by conv name; prunes nothing.

    Works on a folded copy (`attention.folded_copy`): torch-pruning's interactive step
    yields each group with the indices it would cut; we read them and prune nothing.
    """
    shadow = attention.folded_copy(model).cpu().eval().requires_grad_(True)  # traced by autograd
    scores = {shadow.get_submodule(name): s for name, s in attention.scores(model).items()}
    name_of = {m: name for name, m in shadow.named_modules()}
    plan: dict[str, torch.Tensor] = {}
    with torch.enable_grad():
        importance = AttentionImportance(scores)
        pruner = _pruner(shadow, importance, keep, False, round_to, size, False, keep_residual)
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                layer = dep.target.module
                depthwise = isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1
                if isinstance(layer, nn.Conv2d) and (_prunes_out(dep) or depthwise):
                    plan[name_of[layer]] = torch.tensor(sorted(idxs), dtype=torch.long)
    return plan


def prune_model(
    model, meta, keep, importance="attention", global_pruning=False, round_to=16, grad_batch=None,
    protect_stem=False, kept: dict | None = None, keep_residual: float | None = None,
) -> list:  # fmt: skip
    """Prune `model` in place; returns torch-pruning's pruning history (JSON-able).

    Residual groups keep `keep_residual` of their channels (default `residual_keep(keep)`),
    the others `keep`. `grad_batch` = (images, labels) for taylor and attention-taylor.
    `kept`, if given, is filled with {layer name: indices of the output channels it
    kept} for every BatchNorm, Conv2d and Linear that lost output channels.
    """
    size = meta["preprocessing"]["size"]
    with torch.enable_grad():  # torch-pruning traces the graph through autograd
        pruner = make_pruner(
            model, meta, keep, importance, global_pruning, round_to, size, protect_stem, keep_residual,
            grad_batch,
        )  # fmt: skip
        if keep < 1.0:
            name_of = {m: name for name, m in model.named_modules()}
            for group in pruner.step(interactive=True):  # what pruner.step() does, noting BN channels
                for dep, idxs in group if kept is not None else []:
                    layer, gone = dep.target.module, set(idxs)
                    is_bn = isinstance(layer, nn.modules.batchnorm._BatchNorm)
                    if is_bn or (isinstance(layer, (nn.Conv2d, nn.Linear)) and _prunes_out(dep)):
                        n = layer.num_features if is_bn else layer.weight.shape[0]
                        kept[name_of[layer]] = torch.tensor([i for i in range(n) if i not in gone])
                group.prune()
    model.zero_grad(set_to_none=True)
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def _prunes_out(dep) -> bool:
    return getattr(dep.pruning_fn, "__name__", "") == "prune_out_channels"


def ort_latency(dense: nn.Module, pruned: nn.Module, meta: dict) -> dict:
    """ONNX Runtime CPU latency (median seconds) at batch 1 and 32, paired runs."""
    from slimfg.bench import paired_latency
    from slimfg.exporters import export_onnx

    size = meta["preprocessing"]["size"]
    x = torch.randn(2, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dense": Path(tmp) / "dense.onnx", "pruned": Path(tmp) / "pruned.onnx"}
        export_onnx(dense, {**meta, "pruning": None}, paths["dense"], x)
        export_onnx(pruned, meta, paths["pruned"], x)
        return {
            "latency_b1_s": paired_latency(paths, 1, size, rounds=30),
            "latency_b32_s": paired_latency(paths, 32, size, rounds=6),
        }


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int) -> None:
    """Re-estimate BatchNorm running statistics on training images after pruning.

    Removing a conv's input channels shifts its output distribution, so the next BN's
    stored mean/variance no longer match; a few forward passes (no gradients, no weight
    change) fix that before fine-tuning.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    for i, (x, _, _) in enumerate(loader):
        if i >= batches:
            break
        if x is not None:
            model(x)
    model.eval()


def _hooks(model: nn.Module, on_bn, on_linear) -> list:
    """Pre-hooks on every BatchNorm (sees its input), hooks on every Linear (its output)."""
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(m.register_forward_pre_hook(functools.partial(on_bn, name)))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(functools.partial(on_linear, name)))
    return hooks


def _run(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def bn_input_stats(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """On `x` (eval mode): per-channel mean and variance of every BatchNorm's input, and
    the mean output of every Linear layer."""
    stats = {}

    def on_bn(name, _bn, inputs):
        stats[name] = (inputs[0].mean((0, 2, 3)), inputs[0].var((0, 2, 3)))

    def on_linear(name, _fc, _inputs, output):
        stats[name] = (output.flatten(0, -2).mean(0),)

    _run(model, x, _hooks(model, on_bn, on_linear))
    return stats


@torch.no_grad()
def match_bn(model: nn.Module, dense: dict, kept: dict, x: torch.Tensor) -> None:
    """Shift and scale every BN's running statistics so that, on `x`, each kept channel
    leaves the BN as it did in the unpruned model (`dense` = `bn_input_stats` before),
    and shift the bias of every unpruned Linear (the classifier) back to its mean output.

    Pruning a channel whose attention is ~0 removes a constant from the next layer's
    input (BN maps a silent channel to beta - gamma * mean / std): this puts the
    constant back exactly. Unlike `recalibrate_bn` it keeps the statistics the rest of
    the network was trained with. One forward pass; each layer is corrected before the
    layers after it run, so downstream corrections see corrected inputs.
    """

    def on_bn(name, bn, inputs):
        mean_d, var_d = dense[name]
        if name in kept:
            mean_d, var_d = mean_d[kept[name]], var_d[kept[name]]
        mean_p, var_p = inputs[0].mean((0, 2, 3)), inputs[0].var((0, 2, 3))
        bn.running_mean += mean_p - mean_d
        bn.running_var *= (var_p + bn.eps) / (var_d + bn.eps)

    def on_linear(name, fc, _inputs, output):
        mean_d = dense[name][0]
        if fc.bias is not None and mean_d.shape[0] == fc.out_features:
            fc.bias += mean_d - output.flatten(0, -2).mean(0)

    _run(model, x, _hooks(model, on_bn, on_linear))


def _refittable(layer: nn.Module) -> bool:
    """Dense convs (groups 1) whose input we can unfold exactly, and Linear layers.

    A k x k conv must be a plain `nn.Conv2d` with numeric padding; subclasses that pad in
    `forward` (timm's `Conv2dSame`) are refitted only when 1 x 1, where padding is zero.
    """
    if isinstance(layer, nn.Linear):
        return True
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1:
        return False
    if layer.kernel_size == (1, 1) and layer.padding in ((0, 0), "valid"):
        return True
    return type(layer) is nn.Conv2d and not isinstance(layer.padding, str)


def _columns(layer: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """`layer`'s input as (samples, features): one row per output position."""
    if isinstance(layer, nn.Linear):
        return inp.flatten(0, -2)
    if layer.kernel_size == (1, 1):
        sh, sw = layer.stride
        return inp[:, :, ::sh, ::sw].permute(0, 2, 3, 1).flatten(0, 2)
    cols = nn.functional.unfold(inp, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    return cols.transpose(1, 2).flatten(0, 1)


def _rows(layer: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """`layer`'s output as (samples, channels), rows in the order `_columns` makes them."""
    return output.flatten(0, -2) if isinstance(layer, nn.Linear) else output.movedim(1, -1).flatten(0, 2)


@torch.no_grad()
def refit(
    model: nn.Module, dense: nn.Module, kept: dict, x: torch.Tensor, ridge: float = 1e-2,
    max_rows: int = 50_000,
) -> list[str]:  # fmt: skip
    """Least-squares refit of each dense conv and Linear of the pruned `model`, first to
    last, so that on `x` its output matches the unpruned `dense` model's (kept channels).

    The channel-pruning reconstruction of He et al. (2017) and ThiNet: a layer that lost
    input channels solves `min ||W' X' - W X||^2 + ridge` for its new kernel, where X' is
    what the pruned network now feeds it (errors from the layers before included) and
    W X the unpruned layer's output. BatchNorm statistics stay the unpruned ones, which
    is right once the conv outputs match. Two forward passes: the unpruned model's
    records every target (at up to `max_rows` sampled positions per layer); in the
    pruned model's, each layer refits itself on its actual input and hands on the
    output of its new kernel. Returns the names of the refitted layers.
    """
    gen = torch.Generator().manual_seed(0)
    targets, done = {}, []

    def record(name, layer, _inputs, output):
        y = _rows(layer, output)
        rows = torch.randperm(len(y), generator=gen)[:max_rows] if len(y) > max_rows else None
        y = y if rows is None else y[rows]
        targets[name] = (rows, y[:, kept[name]] if name in kept else y)

    def solve(name, layer, inputs, _output):
        rows, y = targets[name]
        x_cols = _columns(layer, inputs[0])
        x_cols = (x_cols if rows is None else x_cols[rows]).double()
        if layer.bias is not None:
            x_cols = torch.cat([x_cols, torch.ones(len(x_cols), 1, dtype=x_cols.dtype)], 1)
        gram = x_cols.T @ x_cols
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        solution = torch.linalg.solve(gram, x_cols.T @ y.double()).T  # (out, features [+ bias])
        if layer.bias is not None:
            layer.bias.copy_(solution[:, -1])
            solution = solution[:, :-1]
        layer.weight.copy_(solution.reshape(layer.weight.shape))
        done.append(name)
        return layer.forward(inputs[0])  # the new kernel's output, for the layers after it

    names = [name for name, layer in model.named_modules() if _refittable(layer)]
    for net, hook in ((dense, record), (model, solve)):
        handles = [net.get_submodule(n).register_forward_hook(functools.partial(hook, n)) for n in names]
        try:
            net.eval()(x)
        finally:
            for h in handles:
                h.remove()
    return done


# What happens after pruning, before fine-tuning (needs --data): `refit` re-solves each
# dense conv and linear layer for the unpruned outputs and keeps BN statistics; `match` restores each
# BN's input moments to the unpruned model's (`match_bn`); `recal` re-estimates BN
# statistics from scratch on augmented training batches (`recalibrate_bn`); `none`.
BN_STATS = ("refit", "match", "recal", "none")


def weights_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def prune(
    model_path: str,
    out: str,
    keep: float = 0.6,
    importance: str | None = None,
    global_pruning: bool = False,
    round_to: int | None = 16,
    data_dir: str | None = None,
    finetune: str = "",
    train_options: dict | None = None,
    latency: bool = True,
    bn_batches: int = 50,
    protect_stem: bool = False,
    bn_stats: str = "refit",
    calib_images: int = 512,
    keep_residual: float | None = None,
) -> dict:
    """Prune a slimfg artifact, optionally fine-tune it on `data_dir`, save it; returns the report.

    `importance` None picks `attention-taylor` when there is data to take gradients on,
    else `attention` (docs/method.md: the gate Taylor ranking recovered the unpruned
    accuracy at keep 0.6 where |a| and magnitude stayed 1.7 and 1.2 points below).
    """
    from slimfg.config import ATTENTION_PHASES, TrainConfig
    from slimfg.evaluate import evaluate_model
    from slimfg.train import train

    out = Path(out)
    if out.suffix != ".safetensors":
        raise SlimfgError(f"--out must be a .safetensors file, got {out}")
    if bn_stats not in BN_STATS:  # checked before the slow evaluation below
        raise unknown_name("--bn-stats", bn_stats, list(BN_STATS))
    if finetune and not data_dir:
        raise SlimfgError("--finetune needs --data DIR")
    importance = importance or ("attention-taylor" if data_dir else "attention")
    model, meta = artifact.load(model_path)
    if meta.get("pruning"):
        raise SlimfgError(f"{model_path} is already pruned; prune the unpruned model instead")
    size = meta["preprocessing"]["size"]

    @functools.cache
    def train_split():  # indexed once, for Taylor gradients and BN re-estimation
        return data.load(data_dir).train

    def measure(m: nn.Module, m_meta: dict) -> dict:
        result = {**count(m, size), "weights_bytes": weights_bytes(m)}
        if data_dir:
            result["val_top1"] = evaluate_model(m, m_meta, data_dir)["top1"]
        return result

    before = measure(model, meta)
    dense_stats, dense_model, kept, calib = None, None, {}, None
    gradients = importance in GRADIENT_IMPORTANCES
    if data_dir and keep < 1.0 and (gradients or bn_stats in ("match", "refit")):
        loader = data.loader(
            train_split(), meta["preprocessing"], False, calib_images, 2,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        calib = next(iter(loader))[:2]  # one batch: importance, refit and match see all of it
        if bn_stats == "match":
            dense_stats = bn_input_stats(model, calib[0])
        elif bn_stats == "refit":
            dense_model = copy.deepcopy(model)
    t0 = time.perf_counter()
    history = prune_model(
        model, meta, keep, importance, global_pruning, round_to, calib if gradients else None, protect_stem,
        kept, keep_residual,
    )  # fmt: skip
    keep_residual = residual_keep(keep, keep_residual)
    record = {"keep": keep, "keep_residual": keep_residual, "importance": importance,
              "global": global_pruning, "round_to": round_to, "protect_stem": protect_stem,
              "history": history}  # fmt: skip
    meta = {**meta, "pruning": record}
    log.info("pruned with %s importance in %.1f s", importance, time.perf_counter() - t0)
    if dense_stats is not None:
        match_bn(model, dense_stats, kept, calib[0])
    elif dense_model is not None:
        t0 = time.perf_counter()
        done = refit(model, dense_model, kept, calib[0])
        log.info("refitted %d layers in %.1f s", len(done), time.perf_counter() - t0)
    elif data_dir and bn_stats == "recal" and bn_batches and keep < 1.0:
        loader = data.loader(train_split(), meta["preprocessing"], True, 32, 2)
        recalibrate_bn(model, loader, bn_batches)
    pruned_val_top1 = None
    if data_dir and finetune:  # what fine-tuning starts from
        pruned_val_top1 = evaluate_model(model, meta, data_dir)["top1"]
        log.info("val top-1 after pruning, before fine-tuning: %.4f", pruned_val_top1)
    if finetune:
        run = out.with_name(out.stem + "_finetune")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            pruned = Path(tmp) / "pruned.safetensors"
            artifact.save(pruned, model, meta)
            options = {"image_size": size, **(train_options or {})}
            if options.get("distill") and not options.get("teacher"):
                options["teacher"] = str(model_path)
            mode = "out" if set(ATTENTION_PHASES) & set(finetune) else "none"
            cfg = TrainConfig(data=data_dir, out=str(run), arch=meta["arch"], weights=str(pruned),
                              schedule=finetune, attention=mode, **options)  # fmt: skip
            model, meta = artifact.load(train(cfg))
    after = measure(model, meta)
    if latency:
        dense, _ = artifact.load(model_path)
        for key, value in ort_latency(dense, model, meta).items():
            before[key], after[key] = value["dense"]["median_s"], value["pruned"]["median_s"]
    meta["pruning"]["report"] = {"before": before, "after": after, "pruned_val_top1": pruned_val_top1}
    artifact.save(out, model, meta)
    for key in ("params", "macs"):
        log.info("%s: %d -> %d (%.3fx)", key, before[key], after[key], after[key] / before[key])
    if data_dir:
        log.info("val top-1: %.4f -> %.4f", before["val_top1"], after["val_top1"])
    return meta["pruning"]["report"]
