"""`slimfg rank`: which channels the task amplifies and which are noise, per layer and
per dependency group, as JSON plus plots a person can read."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn

from slimfg import artifact, models
from slimfg.card import ModelCard
from slimfg.io import write_text
from slimfg.pruning.graph import dependency_graph, example_input
from slimfg.pruning.importance import AttentionImportance, card_scores
from slimfg.pruning.pruner import prune, residual_keep

log = logging.getLogger("slimfg")

# Attention starts at 1.0; a channel scaled below 0.1 contributes <10% of its
# pretrained response and is what the paper calls noise for the task.
NEAR_ZERO = 0.1


def _layers(card: ModelCard) -> dict:
    out = {}
    for name, values in card.attention["scores"].items():
        s = torch.tensor(values)
        out[name] = {
            "channels": len(values),
            "mean": round(s.mean().item(), 5),
            "min": round(s.min().item(), 5),
            "max": round(s.max().item(), 5),
            "near_zero_share": round((s < NEAR_ZERO).float().mean().item(), 4),
            "scores": values,
            "sorted_indices": torch.argsort(s, descending=True).tolist(),
        }
    return out


def _groups(model: nn.Module, card: ModelCard) -> list[dict]:
    """Mean attention per channel of each dependency group (the pruning decision unit)."""
    scores = card_scores(model, card)
    names = {m: n for n, m in model.named_modules()}
    importance = AttentionImportance(scores)
    head = model.get_submodule(models.classifier_name(model))
    graph = dependency_graph(model, example_input(card.size))
    groups = []
    for group in graph.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear]):
        imp = importance(group)
        if imp is None:
            continue
        members = sorted({names[dep.layer] for dep, _ in group if isinstance(dep.layer, nn.Conv2d)})
        groups.append({"root": names[group[0].dep.layer], "members": members, "scores": imp.tolist()})
    return groups


def _kept(model: nn.Module, card: ModelCard, keep: float, round_to: int | None, keep_residual: float) -> dict:
    pruned = copy.deepcopy(model)
    prune(pruned, example_input(card.size), keep=keep, importance="attention", round_to=round_to,
          keep_residual=keep_residual, scores=card.attention["scores"])  # fmt: skip
    return {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}


def rank(model_path: str, keep: float = 0.6, out_dir: str | None = None, round_to: int | None = 16,
         keep_residual: float | None = None) -> dict:  # fmt: skip
    """Write ranking.json and PNG plots for MODEL's attention; returns the ranking."""
    model, card = artifact.load(model_path)
    card_scores(model, card)  # one-line error for a model without attention
    out = Path(out_dir) if out_dir else Path(model_path).with_name("ranking")
    layers = _layers(card)
    keep_residual = residual_keep(keep, keep_residual)
    kept = _kept(model, card, keep, round_to, keep_residual)
    for name, info in layers.items():
        info["kept_at_keep"] = kept.get(name, info["channels"])
    ranking = {
        "model": str(model_path),
        "arch": card.arch,
        "mode": card.attention["mode"],
        "keep": keep,
        "keep_residual": keep_residual,
        "near_zero_threshold": NEAR_ZERO,
        "layers": layers,
        "groups": _groups(model, card),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ranking.json", json.dumps(ranking) + "\n")
    plot(ranking, out)
    return ranking


def summary(ranking: dict) -> str:
    layers = ranking["layers"]
    total = sum(v["channels"] for v in layers.values())
    near = sum(v["near_zero_share"] * v["channels"] for v in layers.values())
    kept = sum(v["kept_at_keep"] for v in layers.values())
    lines = [
        f"{len(layers)} conv layers, {total} channels, {ranking['mode']} attention; "
        f"{near / total:.1%} near zero (< {ranking['near_zero_threshold']}); "
        f"{len(ranking['groups'])} dependency groups; keep {ranking['keep']} "
        f"({ranking['keep_residual']} in residual groups) keeps {kept}/{total} channels",
        f"{'layer':48} {'ch':>5} {'mean':>6} {'min':>6} {'max':>6} {'~0':>6} {'kept':>5}",
    ]
    noisiest = sorted(layers.items(), key=lambda kv: (-kv[1]["near_zero_share"], kv[1]["mean"]))[:10]
    for name, v in noisiest:
        lines.append(
            f"{name[:48]:48} {v['channels']:5d} {v['mean']:6.3f} {v['min']:6.3f} {v['max']:6.3f} "
            f"{v['near_zero_share']:6.1%} {v['kept_at_keep']:5d}"
        )
    return "\n".join(lines)


def plot(ranking: dict, out: Path) -> None:
    """score_distribution.png, sorted_scores.png, kept_channels.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ranking["layers"])
    layers = [ranking["layers"][n] for n in names]
    keep = ranking["keep"]

    fig, ax = plt.subplots(figsize=(max(10, len(names) * 0.25), 5))
    ax.boxplot([v["scores"] for v in layers], showfliers=True, flierprops={"markersize": 2})
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="init (1.0)")
    ax.axhline(ranking["near_zero_threshold"], color="tab:red", lw=0.8, ls=":", label="near zero")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=90, fontsize=6)
    ax.set_ylabel("attention score")
    ax.set_title(f"Attention score distribution per conv layer ({ranking['arch']}, {ranking['mode']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "score_distribution.png", dpi=110)
    plt.close(fig)

    cols = 8
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 1.7), squeeze=False)
    for ax, name, v in zip(axes.flat, names, layers, strict=False):
        ordered = sorted(v["scores"], reverse=True)
        ax.plot(ordered, lw=1)
        ax.axvline(v["kept_at_keep"] - 0.5, color="tab:red", lw=0.8)
        ax.set_title(name[-28:], fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"Sorted attention per layer; red line = keep/drop at keep {keep}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "sorted_scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(10, len(names) * 0.25), 4.5))
    x = range(len(names))
    ax.bar(x, [v["channels"] for v in layers], color="lightgrey", label="before")
    ax.bar(x, [v["kept_at_keep"] for v in layers], color="tab:blue", label=f"kept at keep {keep}")
    ax.set_xticks(list(x), names, rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title("Channels per conv layer before and after pruning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "kept_channels.png", dpi=110)
    plt.close(fig)
