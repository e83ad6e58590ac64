"""slimfg: per-filter attention transfer, attention-guided pruning and export for CNNs.

The Python API takes objects (a model, example inputs, an iterable of batches) and
returns objects; the CLI's path-based jobs are built on it:

    import slimfg
    slimfg.attach_attention(model, mode="out")
    opt = torch.optim.Adam([*slimfg.attention_parameters(model), *head.parameters()])
    ...                                              # your own training loop
    slimfg.fold_attention(model)
    result = slimfg.prune(model, x, keep=0.6, importance="attention-taylor", calib=batches)
    slimfg.refit(model, dense, batches, result.kept)
    slimfg.export(model, "m.onnx", format="onnx", example_inputs=x, card=card)
    slimfg.save("m.safetensors", model, card); model, card = slimfg.load("m.safetensors")

Names are imported on first use (PEP 562), so `import slimfg.runtime` never pulls in
torch. docs/api.md documents each function.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "attach_attention": ("slimfg.attention", "attach"),
    "fold_attention": ("slimfg.attention", "fold"),
    "attention_parameters": ("slimfg.attention", "parameters"),
    "attention_scores": ("slimfg.attention", "scores"),
    "build_model": ("slimfg.models", "build"),
    "preprocessing": ("slimfg.models", "preprocessing"),
    "prune": ("slimfg.pruning.pruner", "prune"),
    "PruneResult": ("slimfg.pruning.pruner", "PruneResult"),
    "refit": ("slimfg.pruning.repair", "refit"),
    "export": ("slimfg.exporters", "export"),
    "ExportResult": ("slimfg.exporters.common", "ExportResult"),
    "save": ("slimfg.artifact", "save"),
    "load": ("slimfg.artifact", "load"),
    "ModelCard": ("slimfg.card", "ModelCard"),
    "TrainConfig": ("slimfg.config", "TrainConfig"),
    "PruneConfig": ("slimfg.config", "PruneConfig"),
    "ExportConfig": ("slimfg.config", "ExportConfig"),
    "SlimfgError": ("slimfg.errors", "SlimfgError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'slimfg' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
