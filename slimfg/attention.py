"""Per-filter attention (arXiv 1906.04950): a learnable scale on every conv kernel.

`attach` registers W_eff = W * a on every Conv2d through torch.nn.utils.parametrize, so
the module classes stay untouched; `fold` bakes a into W and leaves a plain network;
`scores` reads the per-output-channel ranking the rest of slimfg consumes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

MODES = ("out", "full")


class FilterAttention(nn.Module):
    """W -> W * a. `out`: a is (C_out,1,1,1); `full`: (C_out, C_in/groups, 1, 1)."""

    def __init__(self, weight: torch.Tensor, mode: str, init: float) -> None:
        super().__init__()
        shape = (weight.shape[0], 1, 1, 1) if mode == "out" else (*weight.shape[:2], 1, 1)
        self.mode = mode
        self.attention = nn.Parameter(
            torch.full(shape, float(init), dtype=weight.dtype, device=weight.device)
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.attention


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every Conv2d (stem, depthwise, pointwise, downsample), by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def attach(
    model: nn.Module, mode: str = "out", init: float = 1.0, exclude: tuple[nn.Module, ...] = ()
) -> nn.Module:
    """Give every Conv2d (but those in `exclude`, e.g. a 1x1-conv classifier) a learnable
    attention scale; init 1.0 leaves outputs unchanged."""
    if mode not in MODES:
        raise ValueError(f"attention mode must be one of {MODES}, got {mode!r}")
    for conv in convs(model).values():
        if not parametrize.is_parametrized(conv, "weight") and not any(conv is m for m in exclude):
            parametrize.register_parametrization(conv, "weight", FilterAttention(conv.weight, mode, init))
    return model


def modules(model: nn.Module) -> dict[str, FilterAttention]:
    """The attached FilterAttention modules, keyed by the name of their conv."""
    found = {}
    for name, conv in convs(model).items():
        if parametrize.is_parametrized(conv, "weight"):
            for p in conv.parametrizations.weight:
                if isinstance(p, FilterAttention):
                    found[name] = p
    return found


def parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.attention for m in modules(model).values()]


def fold(model: nn.Module) -> nn.Module:
    """Bake W * a into the conv weights and remove the attention parameters."""
    for conv in convs(model).values():
        if parametrize.is_parametrized(conv, "weight"):
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return model


def folded_copy(model: nn.Module) -> nn.Module:
    """A deep copy with attention folded in; `model` keeps training.

    A deep-copied parametrized module shares its class with the original, and `fold`
    (torch's remove_parametrizations) deletes the weight property from that class,
    which would break the original; so each copy first gets a class of its own.
    """
    shadow = copy.deepcopy(model)
    for conv in convs(shadow).values():
        if parametrize.is_parametrized(conv, "weight"):
            cls = type(conv)
            conv.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return fold(shadow)


def scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per-layer, per-output-channel scores: |a| for `out`, the row L2 norm for `full`."""
    return {name: m.attention.detach().flatten(1).norm(dim=1).cpu() for name, m in modules(model).items()}


def regulariser(model: nn.Module, kind: str, targets: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The attention penalty; the caller multiplies by lambda.

    `l1`: mean |a| over all filters (drives noise channels to 0); `mod-l2`: -sum of
    per-layer mean (a-1)^2 (both as in the authors' code). `prune`: mean |a| over only
    the `targets` (conv name -> output-channel indices), the channels that pruning at the
    chosen keep would remove (`slimfg.prune.drop_plan`), so the network learns to do
    without them before they are cut.
    """
    if kind == "prune":
        found = {name: m.attention for name, m in modules(model).items()}
        picked = [found[name][idx.to(found[name].device)] for name, idx in targets.items()]
        return sum(a.abs().sum() for a in picked) / max(sum(a.numel() for a in picked), 1)
    params = parameters(model)
    if kind == "l1":
        return sum(p.abs().sum() for p in params) / sum(p.numel() for p in params)
    if kind == "mod-l2":
        return -sum(((p - 1) ** 2).mean() for p in params)
    raise ValueError(f"unknown regulariser {kind!r}")
