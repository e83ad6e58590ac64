"""Channel rankings: torch-pruning `Importance` criteria, attention's among them.

A criterion maps a dependency group to one score per channel (torch-pruning's
interface). `AttentionImportance` averages per-conv scores over the group; the scores
are the learned attention |a| (`attention`) or the attention-gate Taylor scores
(`attention-taylor`). The others are torch-pruning's own.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

from slimfg import attention
from slimfg.card import ModelCard
from slimfg.errors import SlimfgError
from slimfg.pruning.graph import channel_macs, prunes_out

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class AttentionImportance(tp.importance.Importance):
    """Group importance = mean per-channel score over the group's conv outputs."""

    def __init__(self, scores: dict[nn.Module, torch.Tensor]) -> None:
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0].root_idxs)
        total, count = torch.zeros(n), torch.zeros(n)
        for i, (dep, idxs) in enumerate(group):
            if dep.layer in self.scores and prunes_out(dep):
                root = torch.tensor(group[i].root_idxs, dtype=torch.long)
                total.scatter_add_(0, root, self.scores[dep.layer][idxs].float())
                count.scatter_add_(0, root, torch.ones(len(idxs)))
        if not count.any():
            return None  # no attention-scored conv in this group: torch-pruning skips it
        return total / count.clamp(min=1)


class PerMac(tp.importance.Importance):
    """Another criterion's group scores divided by the MACs one channel of the group costs
    (`graph.channel_macs`): what one global threshold compares when it spends a MACs
    budget. A channel of a late, low-resolution layer costs a fraction of an early one's,
    so at the same score it is cut later.

    The best `min_kept` channels of every group (at least a tenth) score infinity: a global
    threshold never empties a group, which torch-pruning would skip and leave whole.
    `floored` and `channels` count those channels and all scored ones: a global share
    under floored / channels would put the threshold at infinity."""

    def __init__(self, inner: tp.importance.Importance, positions: dict[nn.Module, int],
                 min_kept: int = 1) -> None:  # fmt: skip
        self.inner, self.positions, self.min_kept = inner, positions, min_kept
        self.floored = self.channels = 0

    def __call__(self, group) -> torch.Tensor | None:
        scores = self.inner(group)
        if scores is None:
            return None
        scores = scores / channel_macs(group, self.positions)
        kept = min(len(scores), max(self.min_kept, -(-len(scores) // 10)))
        scores[scores.topk(kept).indices] = float("inf")
        self.floored, self.channels = self.floored + kept, self.channels + len(scores)
        return scores


@torch.enable_grad()
def attention_taylor_scores(model: nn.Module, calib: Batches) -> dict[nn.Module, torch.Tensor]:
    """Per filter: how much the loss would change if its attention were set to 0.

    Molchanov et al. (2019)'s first-order Taylor importance on gates, with the attention
    module as the gate: a fresh `out` attention at 1 on every conv of the (folded) model,
    whose gradient d loss / d a_i estimates the loss change of closing filter i; the score
    is that gradient squared, summed over the `calib` batches of (images, labels). On a
    model trained with attention, a = 1 on the folded weights is the learned attention,
    so the gradient is a_i * d loss / d a_i of the trained gates. Weights are left unchanged.
    """
    attention.attach(model, "out", 1.0)
    gates = attention.modules(model)
    total = {name: torch.zeros(len(g.attention)) for name, g in gates.items()}
    was_training = model.training
    model.eval()
    try:
        for xb, yb in calib:
            loss = nn.functional.cross_entropy(model(xb), yb)
            grads = torch.autograd.grad(loss, [g.attention for g in gates.values()])
            for name, grad in zip(gates, grads, strict=True):
                total[name] += grad.detach().flatten().pow(2).cpu()
    finally:
        attention.fold(model)  # the gates are exactly 1: the weights come back unchanged
        model.train(was_training)
    return {model.get_submodule(name): s for name, s in total.items()}


@torch.enable_grad()
def accumulate_gradients(model: nn.Module, calib: Batches) -> None:
    """Loss gradients summed in every parameter's .grad, which torch-pruning's `taylor` reads."""
    model.eval()
    for xb, yb in calib:
        nn.functional.cross_entropy(model(xb), yb).backward()


def card_scores(model: nn.Module, card: ModelCard) -> dict[nn.Module, torch.Tensor]:
    """The card's per-channel attention scores, keyed by conv module."""
    if not card.attention:
        raise SlimfgError(
            f"{card.arch} model was trained without attention; "
            "use `slimfg prune --importance magnitude` (or bn, taylor, random)"
        )
    return {model.get_submodule(name): torch.tensor(s) for name, s in card.attention["scores"].items()}


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
