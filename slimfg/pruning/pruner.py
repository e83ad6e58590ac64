"""Cut channels: a torch-pruning pruner per (keep, keep_residual, round_to, importance),
and `prune()`, the entry that ranks, cuts and reports on any traceable `nn.Module`.

A dependency group is all the convs that must lose the same channels (those coupled by
a residual add share one decision; a depthwise conv follows its producer). Per layer,
every group loses `1 - keep` of its channels, residual groups half as much by default
(`residual_keep`). `global_pruning` spends the same MACs budget, the MACs of that
per-layer cut (or `macs_budget`, a cut to a MACs target), where the ranking says: every
channel's score is divided by the MACs it costs (`PerMac`) and one threshold over all
groups decides (docs/method.md). The classifier is never pruned. The pruning record is torch-pruning's own
`pruning_history()` (plain JSON), which `graph.replay` re-applies to a fresh model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from slimfg import attention, models
from slimfg.errors import SlimfgError, unknown_name
from slimfg.pruning.graph import (
    count,
    hidden_shuffles,
    output_positions,
    prunes_out,
    residual_groups,
    shuffled_layers,
    stem_convs,
)
from slimfg.pruning.importance import (
    GRADIENT_IMPORTANCES,
    IMPORTANCES,
    AttentionImportance,
    Batches,
    PerMac,
    accumulate_gradients,
    attention_taylor_scores,
)

log = logging.getLogger("slimfg")


@dataclass
class PruneResult:
    """What `prune` did: the settings, torch-pruning's history, the kept channels of every
    layer that lost output channels, and params/MACs before and after."""

    keep: float
    keep_residual: float
    importance: str
    round_to: int | None
    global_pruning: bool
    protect_stem: bool
    global_share: float | None = None  # with global_pruning: the share of all channels kept
    history: list = field(default_factory=list)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The JSON pruning record a ModelCard stores; `graph.replay` re-applies it."""
        return {"keep": self.keep, "keep_residual": self.keep_residual, "importance": self.importance,
                "global": self.global_pruning, "global_share": self.global_share, "round_to": self.round_to,
                "protect_stem": self.protect_stem, "history": self.history}  # fmt: skip


def residual_keep(keep: float, given: float | None = None) -> float:
    """The share of channels kept in residual groups: `given`, or by default half the cut
    of the others.

    A residual group is one channel of the stream that every block of a stage reads and
    adds to; cutting it removes that feature from all those blocks at once, so channel
    pruning of residual networks (He et al. 2017, ThiNet) cuts inside the blocks and
    spares the stream (docs/method.md).
    """
    return (1 + keep) / 2 if given is None else given


def build_pruner(model, example_inputs, importance, keep, global_pruning=False, round_to=16,
                 protect_stem=False, keep_residual=None) -> tp.pruner.BasePruner:  # fmt: skip
    """torch-pruning's pruner for these settings; `importance` is a torch-pruning criterion."""
    if not 0 < keep <= 1:
        raise SlimfgError(f"--keep must be in (0, 1], got {keep}")
    keep_residual = residual_keep(keep, keep_residual)
    if not 0 < keep_residual <= 1:
        raise SlimfgError(f"--keep-residual must be in (0, 1], got {keep_residual}")
    head = model.get_submodule(models.classifier_name(model))
    ignored = [head, *(stem_convs(model, example_inputs) if protect_stem else [])]
    shuffled = shuffled_layers(model, example_inputs, ignored)
    if shuffled:
        unpruned = set(shuffled)
        names = [name for name, m in model.named_modules() if m in unpruned]
        log.warning("not pruning %d layers whose channels pass through a channel shuffle: %s%s",
                    len(names), ", ".join(names[:4]), ", ..." if len(names) > 4 else "")  # fmt: skip
        ignored += shuffled
    ratios = None
    if keep_residual != keep and keep < 1 and not global_pruning:
        ratios = dict.fromkeys(residual_groups(model, example_inputs, ignored), 1.0 - keep_residual)
    with hidden_shuffles():
        return tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=importance,
            pruning_ratio=1.0 - keep,
            pruning_ratio_dict=ratios,
            global_pruning=global_pruning,
            # Global ranking may empty a layer that the task barely uses; keep 10% of each.
            max_pruning_ratio=0.9,
            round_to=round_to,
            ignored_layers=ignored,
        )


def check_prunable(model: nn.Module, example_inputs: torch.Tensor, name: str) -> None:
    """A one-line SlimfgError, before any training, for a model that torch-pruning cannot
    cut: a trial prune to keep 0.5 of a copy (a few seconds for a mid-size CNN), with
    prune's default channel rounding."""
    trial = copy.deepcopy(model).eval()
    with _one_line(f"{name} is not supported: torch-pruning cannot cut it"), torch.enable_grad():
        build_pruner(trial, example_inputs, tp.importance.MagnitudeImportance(), 0.5, round_to=16).step()
        with torch.no_grad():
            trial(example_inputs)


@contextlib.contextmanager
def _one_line(message: str):
    """torch-pruning's failures on a graph it cannot follow, as one-line SlimfgErrors:
    `message (ErrorType: first line)`."""
    try:
        yield
    except SlimfgError:
        raise
    except Exception as e:
        raise SlimfgError(f"{message} ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def pruned_copy(model: nn.Module, x: torch.Tensor, keep: float, **prune_options) -> nn.Module:
    """A copy of `model` cut per layer to `keep` by magnitude: the channel counts of any
    per-layer ranking, at no cost in data."""
    trial = copy.deepcopy(model)
    prune(trial, x, keep=keep, importance="magnitude", **prune_options)
    return trial


def _global_share(model: nn.Module, example_inputs: torch.Tensor, criterion: PerMac, budget: float,
                  round_to: int | None, protect_stem: bool, steps: int = 8) -> float:  # fmt: skip
    """The largest share of all channels that a global cut by `criterion` keeps within
    `budget` MACs, bisected on copies (MACs only fall as the share falls, down to the share
    that `criterion`'s floor keeps)."""

    def cut(share: float) -> tuple[float, PerMac]:
        # Copied together, so the criterion's scores stay keyed by the copy's modules.
        trial, trial_criterion = copy.deepcopy((model, criterion))
        build_pruner(trial, example_inputs, trial_criterion, share, True, round_to, protect_stem).step()
        return count(trial, example_inputs)["macs"], trial_criterion

    _, scored = cut(1.0)  # cuts nothing; counts the channels every group keeps at least
    lo, hi = (scored.floored + 1) / max(scored.channels, 1), 1.0  # cut(hi) costs more than budget
    if lo >= hi or cut(lo)[0] > budget:
        raise SlimfgError("--global cannot meet the MACs budget: use --per-layer")
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cut(mid)[0] <= budget else (lo, mid)
    log.info("--global: %.1f%% of the channels fit the MACs budget", 100 * lo)
    return lo


def _criterion(model: nn.Module, importance: str, keep: float, calib: Batches | None,
               scores: dict | None) -> tp.importance.Importance:  # fmt: skip
    """The torch-pruning criterion for `importance`, after any gradient pass it needs."""
    if importance not in IMPORTANCES:
        raise unknown_name("importance", importance, list(IMPORTANCES))
    by_module = None
    if importance in GRADIENT_IMPORTANCES and keep < 1:  # keep 1: nothing to rank
        if calib is None:
            raise SlimfgError(f"--importance {importance} needs --data (calib batches of real images)")
        if importance == "attention-taylor":
            by_module = attention_taylor_scores(model, calib)
        else:
            accumulate_gradients(model, calib)
    elif importance == "attention":
        if scores is None:
            raise SlimfgError(
                "--importance attention needs the learned attention: prune the model with attention "
                "still attached, or pass scores= (ModelCard.attention['scores'])"
            )
        by_module = {model.get_submodule(n): torch.as_tensor(s) for n, s in scores.items()}
    return IMPORTANCES[importance](by_module)


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    keep: float = 0.6,
    importance: str = "attention-taylor",
    calib: Batches | None = None,
    keep_residual: float | None = None,
    round_to: int | None = 16,
    global_pruning: bool = False,
    protect_stem: bool = False,
    scores: dict | None = None,
    macs_budget: float | None = None,
) -> PruneResult:
    """Structured pruning of `model` in place; returns what was cut.

    `calib`: (images, labels) batches for the gradient rankings (attention-taylor, taylor).
    `macs_budget` (with `global_pruning`): the MACs the global cut fits in; None: the MACs
    of the per-layer cut to `keep`, which channel rounding leaves below any target.
    A model with attention still attached is folded first, its attention kept as the
    `attention` ranking's scores (or pass `scores`, {conv name: per-channel scores}).
    """
    if attention.modules(model):
        scores = scores if scores is not None else attention.scores(model)
        attention.fold(model)
    result = PruneResult(keep, residual_keep(keep, keep_residual), importance, round_to, global_pruning,
                         protect_stem, before=count(model, example_inputs))  # fmt: skip
    with (
        torch.enable_grad(),
        _one_line(f"torch-pruning cannot cut {type(model).__name__}"),
    ):  # torch-pruning traces through autograd
        criterion = _criterion(model, importance, keep, calib, scores)
        share = keep
        if global_pruning and keep < 1.0:
            budget = macs_budget
            if budget is None:
                per_layer = pruned_copy(model, example_inputs, keep, round_to=round_to,
                                        protect_stem=protect_stem, keep_residual=keep_residual)  # fmt: skip
                budget = count(per_layer, example_inputs)["macs"]
            criterion = PerMac(criterion, output_positions(model, example_inputs), round_to or 1)
            share = _global_share(model, example_inputs, criterion, budget, round_to, protect_stem)
            result.global_share = share
        pruner = build_pruner(model, example_inputs, criterion, share, global_pruning, round_to, protect_stem,
                              keep_residual)  # fmt: skip
        if keep < 1.0:
            name_of = {m: name for name, m in model.named_modules()}
            for group in pruner.step(interactive=True):  # what pruner.step() does, noting kept channels
                for dep, idxs in group:
                    layer, gone = dep.target.module, set(idxs)
                    is_bn = isinstance(layer, nn.modules.batchnorm._BatchNorm)
                    if is_bn or (isinstance(layer, (nn.Conv2d, nn.Linear)) and prunes_out(dep)):
                        n = layer.num_features if is_bn else layer.weight.shape[0]
                        result.kept[name_of[layer]] = torch.tensor([i for i in range(n) if i not in gone])
                group.prune()
    model.zero_grad(set_to_none=True)
    result.history = [
        [name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()
    ]
    with _one_line(f"torch-pruning cut {type(model).__name__} into a model that no longer runs"):
        result.after = count(model, example_inputs)
    return result


@torch.no_grad()
def drop_plan(model: nn.Module, keep: float, example_inputs: torch.Tensor, round_to: int | None = 16,
              keep_residual: float | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
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
        pruner = build_pruner(shadow, example_inputs, AttentionImportance(scores), keep, False, round_to,
                              False, keep_residual)  # fmt: skip
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                layer = dep.target.module
                depthwise = isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1
                if isinstance(layer, nn.Conv2d) and (prunes_out(dep) or depthwise):
                    plan[name_of[layer]] = torch.tensor(sorted(idxs), dtype=torch.long)
    return plan
