"""torch-pruning's dependency graph as slimfg uses it: build, replay a pruning record,
count params and MACs, and find the groups that need special treatment (the stem stage,
the residual streams)."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def example_input(size: int) -> torch.Tensor:
    """One zero image of `size` px: what the graph is traced and MACs are counted on."""
    return torch.zeros(1, 3, size, size)


def dependency_graph(model: nn.Module, example_inputs: torch.Tensor) -> tp.DependencyGraph:
    with torch.enable_grad():  # torch-pruning traces the graph through autograd
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)


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
def stem_convs(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    """Convs whose output is larger than a quarter of the input resolution: the stem stage.

    `--protect-stem` leaves them unpruned: they hold few MACs and every later layer
    depends on their features.
    """
    size = example_inputs.shape[-1]
    sizes: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: sizes.__setitem__(mod, out.shape[-1]))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    was_training = model.training
    try:
        model.eval()(example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [m for m, s in sizes.items() if s > size / 4]


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
