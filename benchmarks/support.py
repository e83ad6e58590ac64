"""Which CNNs go through slimfg end to end: the support table (issue 15).

For each model: build (random init) -> attach attention -> train one epoch of a few
steps (phase `j`) -> fold -> prune to keep 0.5 with the attention ranking -> save ->
reload (outputs must be identical) -> ONNX export verified against PyTorch -> the
torch-free `Predictor` must give PyTorch's top-1 on real images. A model slimfg refuses
(`models.check_supported`) must be refused with one line before any work. Tiny inputs
(3 classes of the bundled sample, 4 train images each) keep it quick; each model runs in
its own process with a time limit, and the JSON is rewritten after every row.

Usage: python benchmarks/support.py [--models torchvision,timm | NAME,...] [--out FILE]
       python benchmarks/support.py --table family|model   (the README / docs table)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import RESULTS, machine, write_json

# Popular timm CNN families, one model each (the smallest), named by timm's module.
TIMM = {
    "resnet": "timm:resnet18",
    "resnetv2": "timm:resnetv2_50",
    "efficientnet": "timm:efficientnet_b0",
    "mixnet": "timm:mixnet_s",
    "mobilenetv3": "timm:mobilenetv3_small_050",
    "lcnet": "timm:lcnet_050",
    "mobilenetv4": "timm:mobilenetv4_conv_small",
    "regnet": "timm:regnety_002",
    "densenet": "timm:densenet121",
    "convnext": "timm:convnext_atto",
    "ghostnet": "timm:ghostnet_100",
    "rexnet": "timm:rexnet_100",
    "dla": "timm:dla34",
    "cspnet": "timm:cspresnet50",
    "dpn": "timm:dpn68",
    "vgg": "timm:vgg11",
    "inception_v3": "timm:inception_v3",
    "hrnet": "timm:hrnet_w18_small",
    "res2net": "timm:res2net50_14w_8s",
    "resnest": "timm:resnest14d",
    "sknet": "timm:skresnet18",
    "byobnet (repvgg)": "timm:repvgg_a0",
    "vovnet": "timm:ese_vovnet19b_dw",
    "selecsls": "timm:selecsls42b",
    "hardcorenas": "timm:hardcorenas_a",
    "hgnet": "timm:hgnetv2_b0",
    "nfnet": "timm:nf_resnet26",
    "fastvit": "timm:fastvit_t8",
}
SIZE = {"inception_v3": 96, "timm:inception_v3": 96}  # the smallest input each model takes
DEFAULT_SIZE = 64
LIMIT_S = 600


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def contract(arch: str, work: Path) -> dict:
    """Run the whole path for one model in this process; returns its row."""
    from dataclasses import replace

    import torch

    from slimfg import artifact
    from slimfg.config import ExportConfig, TrainConfig
    from slimfg.data import SAMPLE, load, loader
    from slimfg.errors import SlimfgError
    from slimfg.pipeline import export_artifact
    from slimfg.pruning.graph import example_input
    from slimfg.pruning.pruner import prune
    from slimfg.runtime import Predictor
    from slimfg.train import train
    from tests.conftest import make_imagefolder

    size = SIZE.get(arch, DEFAULT_SIZE)
    row, t0 = {"arch": arch, "size": size}, time.perf_counter()
    data = make_imagefolder(work / "data", classes=3, train=4, val=2, size=size)
    cfg = TrainConfig(data=str(data), out=str(work / "run"), arch=arch, weights="none", schedule="j",
                      image_size=size, batch_size=4, workers=0)  # fmt: skip
    try:
        model, card = artifact.load(train(cfg))
    except SlimfgError as e:  # refused when the model is built, before any training
        if " is not supported: " not in str(e):
            raise
        return {**row, "status": "refused", "reason": str(e)}
    before = sum(p.numel() for p in model.parameters())
    result = prune(model, example_input(size), keep=0.5, importance="attention",
                   scores=card.attention["scores"])  # fmt: skip
    card = replace(card, pruning=result.record())
    path = work / "pruned.safetensors"
    artifact.save(path, model, card)
    reloaded, _ = artifact.load(path)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        same = torch.equal(model.eval()(x), reloaded(x))
    if not same:
        return {**row, "status": "fail", "reason": "reloaded model's outputs differ"}
    exported = export_artifact(str(path), "onnx", str(work / "pruned.onnx"), ExportConfig(data=str(data)))
    files = sorted((data / "val").glob("*/*.jpg"))
    got = [top[0][0] for top in Predictor(exported.path).predict_batch(files, k=1)]
    batch = next(iter(loader(load(data).val, card.preprocessing, False, len(files), 0)))[0]
    with torch.no_grad():
        want = [card.classes[i] for i in reloaded(batch).argmax(1)]
    if got != want:
        wrong = sum(g != w for g, w in zip(got, want, strict=True))
        return {**row, "status": "fail", "reason": f"Predictor top-1 differs on {wrong} images"}
    return {
        **row,
        "status": "pass",
        "params": [before, sum(p.numel() for p in model.parameters())],
        "onnx_max_abs_diff": exported.verification["max_abs_diff"],
        "seconds": round(time.perf_counter() - t0, 1),
        "sample": str(SAMPLE.name),
    }


def run_one(arch: str, threads: int | None = None) -> dict:
    """The contract in a child process (isolation and a time limit); a crash is a row too."""
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import json, sys, pathlib; sys.path[:0] = ['benchmarks', '.']; import support; "
            f"print('ROW ' + json.dumps(support.contract({arch!r}, pathlib.Path({tmp!r}))))"
        )
        t0 = time.perf_counter()
        try:
            root = Path(__file__).parent.parent
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  timeout=LIMIT_S, cwd=root, env=env)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"arch": arch, "status": "fail", "reason": f"over {LIMIT_S} s"}
        rows = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if rows:
            return json.loads(rows[-1])
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "arch": arch,
            "status": "fail",
            "reason": last[:300],
            "seconds": round(time.perf_counter() - t0, 1),
        }


SIZE_TOKEN = re.compile(r"^(x?\d.*|v\d|b\d+|[smltbh]|tiny|small|base|large|bn)$")
TIMM_FAMILY = {arch: name for name, arch in TIMM.items()}


def family(arch: str) -> str:
    """resnet18 -> resnet, regnet_y_400mf -> regnet_y, shufflenet_v2_x1_0 -> shufflenet;
    a timm model's family is its TIMM key."""
    if arch in TIMM_FAMILY:
        return TIMM_FAMILY[arch]
    tokens = arch.split("_")
    while len(tokens) > 1 and SIZE_TOKEN.match(tokens[-1]):
        tokens.pop()
    return "_".join(tokens).rstrip("0123456789")


def table(doc: dict, by_family: bool = True) -> str:
    """Markdown: one row per family (torchvision) or per model (timm, or by_family=False)."""
    rows = doc["rows"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "refused", "fail")}
    lines = ["| source | family | models | status | reason |", "|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for row in rows:
        source = "timm" if row["arch"].startswith("timm:") else "torchvision"
        key = (
            source,
            family(row["arch"]) if by_family else row["arch"],
            row["status"],
            row.get("reason", ""),
        )
        groups.setdefault(key, []).append(row["arch"].removeprefix("timm:"))
    for (source, fam, status, reason), names in groups.items():
        lines.append(f"| {source} | {fam} | {', '.join(names)} | {status} | {reason or '-'} |")
    lines += ["", f"{counts['pass']} pass, {counts['refused']} refused with a reason, {counts['fail']} fail."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="torchvision,timm", help="torchvision, timm, or names")
    parser.add_argument("--out", default=str(RESULTS / "support.json"))
    parser.add_argument("--jobs", type=int, default=1, help="models run at once (threads split)")
    parser.add_argument("--table", choices=["family", "model"], help="print the table of --out and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text()), by_family=args.table == "family"))
        return
    names = []
    for item in args.models.split(","):
        names += (
            torchvision_models()
            if item == "torchvision"
            else list(TIMM.values())
            if item == "timm"
            else [item]
        )
    doc = {"machine": machine(), "jobs": args.jobs, "rows": []}
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        for arch, row in zip(names, pool.map(lambda a: run_one(a, threads), names), strict=True):
            doc["rows"].append(row)
            doc["wall_s"] = round(time.perf_counter() - t0, 1)
            write_json(args.out, doc)  # after every row: a stopped run keeps its results
            print(f"{arch:32} {row['status']:8} {row.get('reason', '')[:100]}", flush=True)
    print(table(doc))


if __name__ == "__main__":
    main()
