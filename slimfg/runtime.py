"""Embed an exported slimfg model: onnxruntime + numpy + pillow, never torch.

    from slimfg.runtime import Predictor
    predictor = Predictor("model.onnx")
    predictor.predict("flower.jpg", k=5)   # [("pink primrose", 0.93), ...]

The ONNX file carries everything needed (class names and preprocessing in its
metadata), and `preprocess` reproduces the evaluation transform of training exactly:
resize the short side to round(size / crop_pct) with PIL, centre-crop `size`, scale to
[0, 1], normalise with the arch's mean and std. Keep this module free of torch imports:
a test runs it in a fresh interpreter and checks `sys.modules`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def preprocess(image: Image.Image, pre: dict) -> np.ndarray:
    """PIL image -> float32 (3, size, size), identical to torchvision's Resize + CenterCrop +
    ToTensor + Normalize on PIL input (torchvision resizes PIL images with PIL itself)."""
    size = pre["size"]
    resize = round(size / pre["crop_pct"])
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)  # torchvision truncates the long side
    new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), INTERPOLATION[pre["interpolation"]])
    if new_w < size or new_h < size:  # smaller than the crop: zero-pad like torchvision
        padded = Image.new("RGB", (max(new_w, size), max(new_h, size)))
        padded.paste(image, (max(size - new_w, 0) // 2, max(size - new_h, 0) // 2))
        image, (new_w, new_h) = padded, padded.size
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.asarray(pre["mean"], dtype=np.float32)) / np.asarray(pre["std"], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def session_options(threads: int | None = None):
    """ONNX Runtime CPU options slimfg uses everywhere: intra-op threads not spinning.

    Idle pool threads spin-wait for work by default. On this project's 2-core machine
    that spinning cost a third of every batch-32 run (lite0 160 px: 131 -> 92 ms dense,
    77 -> 37 ms pruned), and it hurt small models most, hiding the pruning speed-up.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return options


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Predictor:
    """Top-k labels for images, from an exported slimfg ONNX model (fp32 or int8)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        options = session_options(threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in props or "preprocessing" not in props:
            raise ValueError(f"{path} is not a slimfg ONNX export (no classes/preprocessing metadata)")
        self.classes: list[str] = json.loads(props["classes"])
        self.preprocessing: dict = json.loads(props["preprocessing"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, images: list) -> np.ndarray:
        """Raw logits for images (paths or PIL images), one row each."""
        batch = np.stack([preprocess(_open(im), self.preprocessing) for im in images])
        return self.session.run(None, {self.input_name: batch})[0]

    def predict(self, image, k: int = 5) -> list[tuple[str, float]]:
        """[(label, probability)] for the `k` most likely classes of one image."""
        return self.predict_batch([image], k)[0]

    def predict_batch(self, images: list, k: int = 5) -> list[list[tuple[str, float]]]:
        probs = softmax(self.logits(images).astype(np.float64))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[i], float(p[i])) for i in row] for p, row in zip(probs, top, strict=True)]


# Larger images are refused before their pixels are decoded: PIL's own decompression-bomb
# limit (about 89 megapixels), so a crafted header cannot make an app allocate gigabytes.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageTooLargeError(ValueError):
    """An image whose header declares more than MAX_PIXELS pixels (refused, not decoded)."""


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead
            img = Image.open(image)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{image}: {img.width}x{img.height} pixels is over the {MAX_PIXELS:,} limit"
                )
            img.load()
            return img
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{image}: {e}") from None
