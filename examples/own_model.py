"""Bring your own CNN and your own training loop: slimfg's Python API end to end.

A small residual CNN defined here (not from torchvision or timm) is trained on the
bundled Flowers sample by a plain PyTorch loop, first whole (a stand-in for your
pretrained weights), then only its attention weights and head. slimfg then prunes it
with the attention-taylor ranking on your batches, refits it, exports it to ONNX, and
the torch-free `Predictor` gives the same top-1 as PyTorch on every val image.

    python examples/own_model.py [--out runs/own_model]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets
from torchvision import transforms as T

import slimfg
from slimfg.data import SAMPLE
from slimfg.runtime import Predictor

# How the images are prepared; it travels in the ONNX file so the Predictor does the same.
PRE = {"size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "interpolation": "bilinear", "crop_pct": 0.875}  # fmt: skip


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyNet(nn.Module):
    def __init__(self, classes: int, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())  # fmt: skip
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(2 * width), nn.ReLU())  # fmt: skip
        self.blocks = nn.Sequential(Block(width), down, Block(2 * width), Block(2 * width))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def loaders(batch: int = 32):
    norm = [T.ToTensor(), T.Normalize(PRE["mean"], PRE["std"])]
    train_tf = T.Compose([T.RandomResizedCrop(PRE["size"], scale=(0.35, 1)), T.RandomHorizontalFlip(), *norm])
    eval_tf = T.Compose([T.Resize(round(PRE["size"] / PRE["crop_pct"])), T.CenterCrop(PRE["size"]), *norm])
    train = datasets.ImageFolder(SAMPLE / "train", train_tf)
    calib = datasets.ImageFolder(SAMPLE / "train", eval_tf)
    val = datasets.ImageFolder(SAMPLE / "val", eval_tf)
    gen = torch.Generator().manual_seed(0)
    return (torch.utils.data.DataLoader(train, batch, shuffle=True, generator=gen),
            torch.utils.data.DataLoader(calib, batch, shuffle=True, generator=gen),
            torch.utils.data.DataLoader(val, batch), train.classes)  # fmt: skip


def fit(model: nn.Module, params, loader, epochs: int, lr: float, bn_train: bool) -> None:
    """Your own loop: Adam on `params`; BatchNorm frozen while attention trains (so the
    attention scale is not normalised away)."""
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        model.train()
        if not bn_train:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


@torch.no_grad()
def top1(model: nn.Module, loader) -> float:
    model.eval()
    hits = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return hits / len(loader.dataset)


def main(out: Path) -> dict:
    torch.manual_seed(0)
    train, calib_loader, val, classes = loaders()
    model = TinyNet(len(classes))
    fit(model, model.parameters(), train, epochs=4, lr=3e-3, bn_train=True)  # stand-in for pretraining
    dense_top1 = top1(model, val)

    slimfg.attach_attention(model, mode="out")  # W_eff = W * a on every Conv2d, a = 1
    params = [*slimfg.attention_parameters(model), *model.fc.parameters()]
    fit(model, params, train, epochs=2, lr=5e-3, bn_train=False)  # attention + head only
    slimfg.fold_attention(model)  # a plain network again
    attention_top1 = top1(model, val)

    dense = copy.deepcopy(model)
    batches = [batch for batch, _ in zip(calib_loader, range(4), strict=False)]  # 128 of your images
    example = next(iter(val))[0][:1]
    result = slimfg.prune(model, example, keep=0.6, importance="attention-taylor", calib=batches)
    slimfg.refit(model, dense, batches, result.kept)  # least-squares repair of the cut layers
    pruned_top1 = top1(model, val)

    card = slimfg.ModelCard(arch="TinyNet", num_classes=len(classes), classes=classes, preprocessing=PRE,
                            pruning=result.record())  # fmt: skip
    images = torch.cat([x for x, _ in val])
    exported = slimfg.export(model, out / "tinynet.onnx", format="onnx", example_inputs=images, card=card)

    predictor = Predictor(exported.path)
    with torch.no_grad():
        want = [classes[i] for i in model.eval()(images).argmax(1)]
    files = [path for path, _ in val.dataset.samples]
    got = [top[0][0] for top in predictor.predict_batch(files, k=1)]
    report = {
        "val_top1": {"dense": dense_top1, "attention": attention_top1, "pruned_refit": pruned_top1},
        "params": [result.before["params"], result.after["params"]],
        "macs": [result.before["macs"], result.after["macs"]],
        "onnx": str(exported.path),
        "predictor_top1_agreement": sum(g == w for g, w in zip(got, want, strict=True)) / len(want),
        "val_images": len(want),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own_model"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(main(args.out), indent=2))
