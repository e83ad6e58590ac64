"""torch-pruning's dependency graph as slimfg uses it: build, replay a pruning record,
count params and MACs, and find the groups that need special treatment (the stem stage,
the residual streams)."""

from __future__ import annotations

import contextlib
import importlib

import torch
import torch_pruning as tp
from torch import nn


def example_input(size: int) -> torch.Tensor:
    """One zero image of `size` px: what the graph is traced and MACs are counted on."""
    return torch.zeros(1, 3, size, size)


# Functions that permute channels through a reshape (ShuffleNet's channel shuffle), which
# torch-pruning's graph cannot follow (it fails while building the graph).
CHANNEL_SHUFFLES = (("torchvision.models.shufflenetv2", "channel_shuffle"),)


@contextlib.contextmanager
def hidden_shuffles(seen: list | None = None):
    """While torch-pruning traces, every channel shuffle is the identity; `seen` collects
    the autograd node of each shuffle's input, so that `shuffled_layers` can keep every
    channel that passes through a shuffle out of pruning. Pruning the other channels with
    this graph is exact: their dependencies never cross a shuffle."""

    def identity(x, *_args, **_kwargs):
        if seen is not None:
            seen.append(x.grad_fn)
        return x

    patched = []
    for module_name, name in CHANNEL_SHUFFLES:
        module = importlib.import_module(module_name)
        patched.append((module, name, getattr(module, name)))
        setattr(module, name, identity)
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


def dependency_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    seen: list = []
    with torch.enable_grad(), hidden_shuffles(seen):  # torch-pruning traces through autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    graph.shuffle_inputs = seen
    return graph


def shuffled_layers(
    model: nn.Module, example_inputs: torch.Tensor, ignored: list[nn.Module]
) -> list[nn.Module]:
    """Convs and Linears whose output channels pass through a channel shuffle: unprunable.

    A layer whose group torch-pruning cannot even index on the shuffle-free graph (its
    channels reach a shuffle through a concatenation) counts too."""
    calls: list = []
    was_training = model.training
    with torch.no_grad(), hidden_shuffles(calls):  # one cheap forward: does it shuffle at all?
        model.eval()(example_inputs)
    model.train(was_training)
    if not calls:
        return []
    graph = dependency_graph(model, example_inputs)
    fed = {id(fn) for fn in graph.shuffle_inputs if fn is not None}
    layers: list[nn.Module] = []
    for layer in model.modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or layer in ignored or layer in layers:
            continue
        pruner = graph.get_pruner_of_module(layer)
        try:
            group = graph.get_pruning_group(
                layer, pruner.prune_out_channels, list(range(pruner.get_out_channels(layer)))
            )
        except (IndexError, ValueError, ZeroDivisionError):
            layers.append(layer)
            continue
        if any(id(dep.target.grad_fn) in fed for dep, _ in group):
            cut = [dep.target.module for dep, _ in group if prunes_out(dep)]
            layers += [m for m in cut if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in layers]
    return layers


def replay(model: nn.Module, record: dict, example_inputs: torch.Tensor) -> nn.Module:
    """Re-apply a stored pruning history to a fresh, unpruned model of the same arch."""
    history = [(name, bool(out), list(idxs)) for name, out, idxs in record["history"]]
    dependency_graph(model, example_inputs).load_pruning_history(history)
    return model


def count(model: nn.Module, example_inputs: torch.Tensor) -> dict:
    """Parameters and multiply-accumulates (torch-pruning's counter) for `example_inputs`."""
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return {"params": int(params), "macs": int(macs)}


def weights_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def prunes_out(dep) -> bool:
    """Whether a dependency removes output channels of its layer (not input channels)."""
    return getattr(dep.pruning_fn, "__name__", "") == "prune_out_channels"


@torch.no_grad()
def output_positions(model: nn.Module, example_inputs: torch.Tensor) -> dict[nn.Module, int]:
    """Every conv's output positions (height x width) and 1 for every Linear, on one forward
    of `example_inputs`: what one output channel's MACs scale with."""
    positions: dict[nn.Module, int] = {}

    def record(layer, _inputs, output):
        positions[layer] = output.shape[-2] * output.shape[-1] if isinstance(layer, nn.Conv2d) else 1

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_hook(record) for m in layers]
    was_training = model.training
    try:
        model.eval()(example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return positions


def stem_convs(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Convs whose output is larger than a quarter of the input resolution: the stem stage.

    `--protect-stem` leaves them unpruned: they hold few MACs and every later layer
    depends on their features.
    """
    quarter = example_inputs.shape[-2] * example_inputs.shape[-1] / 16
    positions = output_positions(model, example_inputs)
    return [m for m, n in positions.items() if isinstance(m, nn.Conv2d) and n > quarter]


def channel_macs(group, positions: dict[nn.Module, int]) -> float:
    """The MACs one channel of a torch-pruning group costs: its row in every conv or Linear
    it is an output of, its column in every one it is an input of (a depthwise conv's
    channel once). `positions`: `output_positions` of the unpruned model."""
    macs, seen = 0.0, set()
    for dep, _ in group:
        layer = dep.target.module
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or layer in seen:
            continue
        seen.add(layer)
        kernel = layer.weight[0, 0].numel()  # k x k for a conv, 1 for a Linear
        if isinstance(layer, nn.Conv2d) and layer.groups == layer.in_channels > 1:  # depthwise
            fan = 1
        else:
            groups = getattr(layer, "groups", 1)
            fan = layer.weight.shape[1] if prunes_out(dep) else layer.weight.shape[0] // groups
        macs += kernel * fan * positions.get(layer, 1)
    return macs


def residual_groups(
    model: nn.Module, example_inputs: torch.Tensor, ignored: list[nn.Module]
) -> list[nn.Module]:
    """Root modules of the dependency groups whose channels pass through a residual add."""
    groups = dependency_graph(model, example_inputs).get_all_groups(
        ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]
    )
    return [g[0].dep.target.module for g in groups if any(_is_add(dep.target.module) for dep, _ in g)]


def _is_add(node) -> bool:
    """A residual add in torch-pruning's graph (an element-wise op node named by its grad_fn)."""
    return isinstance(node, tp.ops._ElementWiseOp) and str(node._grad_fn).startswith("AddBackward")
