"""A minimal app that embeds an exported slimfg model with onnxruntime, numpy and pillow
only: no torch, no slimfg. Everything it needs is inside the .onnx file's metadata.

    slimfg export pruned.safetensors --out flowers.onnx
    python examples/classify.py flowers.onnx photo.jpg [photo2.jpg ...]

The preprocessing is the model's evaluation transform (the same steps as
slimfg/runtime.py): resize the short side, centre crop, scale, normalise.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def load(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return session, json.loads(meta["classes"]), json.loads(meta["preprocessing"])


def preprocess(path, pre):
    size, image = pre["size"], Image.open(path).convert("RGB")
    w, h = image.size
    short = round(size / pre["crop_pct"])  # short side before the centre crop
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resample = getattr(Image.Resampling, pre["interpolation"].upper())
    image = image.resize((new_w, new_h), resample) if (new_w, new_h) != (w, h) else image
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    x = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    x = (x - np.float32(pre["mean"])) / np.float32(pre["std"])
    return x.transpose(2, 0, 1)


def main(model_path, image_paths, k=5):
    session, classes, pre = load(model_path)
    batch = np.stack([preprocess(p, pre) for p in image_paths])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for path, p in zip(image_paths, probs, strict=True):
        print(path)
        for i in np.argsort(-p, kind="stable")[:k]:
            print(f"  {p[i]:7.2%}  {classes[i]}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python classify.py MODEL.onnx IMAGE [IMAGE ...]")
    main(sys.argv[1], sys.argv[2:])
