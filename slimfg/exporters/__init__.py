"""Exporters registry: format -> function(model, meta, path, inputs) -> ExportResult.

ONNX is the hub; other formats (int8, TensorRT, OpenVINO) will consume it.
"""

from slimfg.exporters.onnx import ExportResult, export_onnx

EXPORTERS = {"onnx": export_onnx}

__all__ = ["EXPORTERS", "ExportResult", "export_onnx"]
