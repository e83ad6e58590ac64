"""Repair after the cut, before fine-tuning: put back what the removed channels fed the
layers after them.

`refit` (the default) re-solves each dense conv and Linear by least squares so that it
reproduces the unpruned model's outputs; `match_bn` restores each BatchNorm's input
moments; `recalibrate_bn` re-estimates BatchNorm statistics from scratch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn

from slimfg.data import images_of


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable) -> None:
    """Re-estimate BatchNorm running statistics on `batches` ((images, ...) tuples).

    Removing a conv's input channels shifts its output distribution, so the next BN's
    stored mean/variance no longer match; forward passes (no gradients, no weight
    change) fix that before fine-tuning.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    for x, *_ in batches:
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


@torch.no_grad()
def anchor_bn(model: nn.Module, calib: Iterable) -> int:
    """Make every BatchNorm's running statistics the real statistics of its input on the
    `calib` images, rescaling its affine parameters so that the eval-mode network computes
    exactly the same function. Returns the number of BatchNorm layers changed.

    After a cut and a refit, a BN's stored mean and variance are the unpruned model's,
    and the layers after it were refitted for them; its actual input has another mean
    and a smaller variance. Fine-tuning in train mode normalises with the actual batch
    statistics and pulls the running ones toward them, which undoes the refit (lite0 on
    the demo sample: 87.5% -> 67.5% val top-1 after one epoch of forward passes, no
    weight changed). With gamma' = gamma * s / s_old and beta' = beta + gamma * (m -
    m_old) / s_old the affine map is unchanged, and batch statistics now agree with it.
    Every layer computes what it did, so one pass measures all of them.
    """
    sums: dict[str, list] = {}

    def on_bn(name, _bn, inputs):
        x = inputs[0].double().transpose(0, 1).flatten(1)  # (channels, values)
        s = sums.setdefault(name, [0, 0.0, 0.0])
        s[0] += x.shape[1]
        s[1] = s[1] + x.sum(1)
        s[2] = s[2] + (x * x).sum(1)

    bns = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    changed = 0
    handles = [bn.register_forward_pre_hook(functools.partial(on_bn, name)) for name, bn in bns.items()]
    try:
        model.eval()
        for b in calib:
            model(images_of(b))
    finally:
        for h in handles:
            h.remove()
    for name, (n, total, squares) in sums.items():
        bn = bns[name]
        if not bn.affine or bn.running_mean is None:  # nothing to rescale the function back with
            continue
        mean = total / n
        var = (squares / n - mean * mean).clamp(min=0)
        old_std = (bn.running_var.double() + bn.eps).sqrt()
        new_std = (var + bn.eps).sqrt()
        gamma, beta = bn.weight.double(), bn.bias.double()
        bn.weight.copy_(gamma * new_std / old_std)
        bn.bias.copy_(beta + gamma * (mean - bn.running_mean.double()) / old_std)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        changed += 1
    return changed


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


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the layer of interest has run."""


def _run_to(forward, layer: nn.Module, x: torch.Tensor, before: bool = False) -> tuple:
    """(input, output) of `layer` when `forward(x)` runs; the layers after it never run.
    With `before`, the pass stops as `layer` is called: (input, None)."""
    seen = {}

    def hook(_layer, inputs, output=None):
        seen["io"] = (inputs[0], output)
        raise _Reached

    handle = (layer.register_forward_pre_hook if before else layer.register_forward_hook)(hook)
    try:
        forward(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if "io" not in seen:
        raise RuntimeError(f"{type(layer).__name__} did not run in the forward pass")
    return seen["io"]


def _is_chain(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _chains(model: nn.Module) -> dict[nn.Module, tuple[list[nn.Module], int]]:
    """{module: (units, i)} for every module inside an `nn.Sequential` (the outermost one,
    nested Sequentials flattened into one list of units): the Sequential's output is
    `units[-1](...units[0](x))`, and the module is part of `units[i]`. Running units
    i, i+1, ... from a cached input of unit i is exactly what the model computes there."""
    where: dict[nn.Module, tuple[list[nn.Module], int]] = {}

    def flatten(seq: nn.Module) -> list[nn.Module]:
        return [u for child in seq for u in (flatten(child) if _is_chain(child) else [child])]

    def visit(module: nn.Module) -> None:
        if not _is_chain(module):
            for child in module.children():
                visit(child)
            return
        units = flatten(module)
        for i, unit in enumerate(units):
            for sub in unit.modules():
                where[sub] = (units, i)

    visit(model)
    return where


class _Inputs:
    """The pruned model's input of one chain unit, for every calibration batch, moved
    forward unit by unit as the refit goes: each layer then runs only from the start of
    its own unit instead of from the image (a pass from the image for every layer is
    quadratic in depth)."""

    def __init__(self, units: list[nn.Module], i: int, inputs: list[torch.Tensor]) -> None:
        self.units, self.i, self.x = units, i, inputs

    def move_to(self, i: int) -> None:
        for b, x in enumerate(self.x):
            for unit in self.units[self.i : i]:
                x = unit(x)
            self.x[b] = x
        self.i = i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units[self.i :]:
            x = unit(x)
        return x


@torch.no_grad()
def refit(model: nn.Module, dense: nn.Module, calib: Iterable, kept: dict | None = None,
          ridge: float = 1e-2, max_rows: int = 50_000, cache_bytes: int = 2**31) -> list[str]:  # fmt: skip
    """Least-squares refit of each dense conv and Linear of the pruned `model`, first to
    last, so that on the `calib` images its output matches the unpruned `dense` model's.

    `calib` is a list of image batches (or (images, labels) pairs); `kept` is
    `PruneResult.kept` ({layer name: kept output channels}), and a layer not in it kept
    all of its outputs. The channel-pruning reconstruction of He et al. (2017) and
    ThiNet: a layer that lost input channels solves `min ||W' X' - W X||^2 + ridge` for
    its new kernel, where X' is what the pruned network now feeds it (the layers before
    it already refitted) and W X the unpruned layer's output. BatchNorm statistics stay
    the unpruned ones, which is right once the conv outputs match.

    Streamed, so memory does not grow with the number of images: one pass of `dense`
    records every layer's targets at up to `max_rows` sampled output positions over all
    of `calib`; then for each layer in forward order the pruned model runs batch by batch
    up to that layer and X'^T X' and X'^T (W X) are summed. Inside an `nn.Sequential`
    (timm's and torchvision's stages) it runs from the cached input of the layer's own
    unit (block) instead of from the image, when that cache for all of `calib` fits in
    `cache_bytes`: the same arithmetic, the same weights.
    Memory: one batch's activations, at most `cache_bytes` of cached block inputs, the
    Gram matrices and the sampled targets (at most `max_rows` x the layer's kept channels
    x 4 bytes per layer). Returns the refitted layers' names.
    """
    batches = [images_of(b) for b in calib]
    images, kept = sum(len(b) for b in batches), kept or {}
    names = [name for name, layer in model.named_modules() if _refittable(layer)]
    rows: dict[tuple[str, int], torch.Tensor | None] = {}  # sampled positions per (layer, batch)
    targets: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def record(batch, index, name, layer, _inputs, output):
        y = _rows(layer, output)
        pick = None
        if len(y) // len(batch) * images > max_rows:  # this batch's share of the sampled positions
            gen = torch.Generator().manual_seed(index * 100_003 + len(targets[name]))
            pick = torch.randperm(len(y), generator=gen)[: round(max_rows * len(batch) / images)]
            y = y[pick]
        rows[name, len(targets[name])] = pick
        targets[name].append((y[:, kept[name]] if name in kept else y).clone())

    for x in batches:
        handles = [dense.get_submodule(n).register_forward_hook(functools.partial(record, x, i, n))
                   for i, n in enumerate(names)]  # fmt: skip
        try:
            dense.eval()(x)
        finally:
            for h in handles:
                h.remove()
    model.eval()
    chains, cache = _chains(model), None
    for name in names:
        layer, gram, cross = model.get_submodule(name), None, None
        units, i = chains.get(layer, (None, 0))
        if cache is not None and (cache.units is not units or cache.i > i):
            cache = None
        if cache is None and units is not None:
            first = _run_to(model, units[i], batches[0], before=True)[0]
            if first.nbytes * images / len(batches[0]) <= cache_bytes:
                rest = [_run_to(model, units[i], x, before=True)[0] for x in batches[1:]]
                cache = _Inputs(units, i, [first, *rest])
        if cache is not None:
            cache.move_to(i)
        for b, x in enumerate(batches):
            inp = _run_to(model, layer, x) if cache is None else _run_to(cache.forward, layer, cache.x[b])
            x_cols = _columns(layer, inp[0])
            if rows[name, b] is not None:
                x_cols = x_cols[rows[name, b]]
            x_cols = x_cols.double()
            if layer.bias is not None:
                x_cols = torch.cat([x_cols, torch.ones(len(x_cols), 1, dtype=x_cols.dtype)], 1)
            gram = x_cols.T @ x_cols if gram is None else gram + x_cols.T @ x_cols
            y = targets[name][b].double()
            cross = x_cols.T @ y if cross is None else cross + x_cols.T @ y
        targets[name] = []  # done with this layer's targets
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        solution = torch.linalg.solve(gram, cross).T  # (out, features [+ bias])
        if layer.bias is not None:
            layer.bias.copy_(solution[:, -1])
            solution = solution[:, :-1]
        layer.weight.copy_(solution.reshape(layer.weight.shape).to(layer.weight.dtype))
    return names
