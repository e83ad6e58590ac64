"""Every benchmark script runs end to end in --quick mode, and report.py renders its output."""

import json
import shutil
import statistics
import subprocess
import sys

import pytest

# one worker runs the whole module (conftest.ONE_WORKER_MODULES): its fixture runs every benchmark once
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for name in (
        "transfer",
        "transfer_sweep",
        "prune_curve",
        "latency",
        "prune_latency",
        "op_latency",
        "attention_overhead",
        "malloc",
    ):
        run(f"{name}.py", "--quick", "--out", str(out / f"{name}.json"))
    run("defaults.py", "--quick", "--runs", str(out / "runs"), "--out", str(out / "defaults_quick.json"))
    # the full-budget importance comparison is a prune_curve.py run with other flags
    shutil.copy(out / "prune_curve.json", out / "prune_curve_full.json")
    for machine in ("h100", "cpu"):  # the file names of the published sweeps
        shutil.copy(out / "transfer_sweep.json", out / f"transfer_sweep_{machine}.json")
    return out


def test_transfer_quick(results):
    doc = json.loads((results / "transfer.json").read_text())
    assert set(doc["results"]) == {
        "head",
        "full",
        "bn",
        "attention",
        "attention-full",
        "authors",
        "attention-joint",
    }
    r = doc["results"]["attention"]
    assert r["schedule"] == "fa" and len(r["history"]) == 2 and 0 <= r["final_val_top1"] <= 1
    assert doc["results"]["full"]["trainable_params"] > 100 * r["trainable_params"]
    joint = doc["results"]["attention-joint"]  # trains the head too; counted besides the head
    assert joint["schedule"] == "fj" and joint["trainable_params"] == r["trainable_params"]
    assert joint["params_by_phase"]["j"] == r["trainable_params"] + joint["params_by_phase"]["f"]
    assert (results / "transfer.png").stat().st_size > 0


def test_transfer_sweep_quick(results):
    doc = json.loads((results / "transfer_sweep.json").read_text())
    assert {r["name"] for r in doc["runs"]} == {"64px head cos c35", "64px joint j=5e-3 cos c35"}
    assert all(len(r["val_top1"]) == 2 for r in doc["runs"])
    joint = doc["summary"]["64px joint j=5e-3 cos c35"]
    assert joint["n"] == 1 and joint["std"] == 0 and 0 < joint["mean"] <= 1
    assert doc["grid"]["joint j=5e-3 cos c35"]["schedule"] == "fjjjj"


def test_prune_curve_quick(results):
    rows = json.loads((results / "prune_curve.json").read_text())["rows"]
    assert [(r["keep"], r["importance"]) for r in rows] == [
        (1.0, "none"),
        (0.6, "attention"),
        (0.6, "magnitude"),
    ]
    assert rows[0]["macs_ratio"] == 1.0 and rows[1]["macs_ratio"] < 0.6
    assert all(0 <= r["val_top1"] <= 1 for r in rows)


def test_latency_quick(results):
    rows = json.loads((results / "latency.json").read_text())["rows"]
    names = [r["name"] for r in rows]
    assert "dense onnx" in names and "pruned onnx-int8" in names
    base = next(r for r in rows if r["name"] == "dense onnx")
    for r in rows:  # every row: ratios consistent with its own timings and counts
        assert r["ideal_speedup"] == pytest.approx(base["macs"] / r["macs"])
        for b in (1, 32):
            assert 0 < r[f"b{b}_p50_s"] <= r[f"b{b}_p90_s"]
            assert r[f"speedup_b{b}"] == pytest.approx(base[f"b{b}_p50_s"] / r[f"b{b}_p50_s"])
        assert 0 <= r.get("top1", 0) <= 1 and r["bytes"] > 0
    pruned = next(r for r in rows if r["name"] == "pruned onnx")
    assert pruned["ideal_speedup"] > 1.5 and pruned["macs"] < base["macs"]


def test_prune_latency_and_attention_overhead_quick(results):
    rows = json.loads((results / "prune_latency.json").read_text())["rows"]
    assert rows["dense"]["macs_ratio"] == 1.0 and len(rows) == 3  # dense + round_to 16 x stem on/off
    for name, row in rows.items():
        assert row["macs_ratio"] == pytest.approx(row["macs"] / rows["dense"]["macs"], abs=1e-4), name
        assert row["latency_b1_ms"] > 0 and row["latency_b32_ms"] > row["latency_b1_ms"], name
    pruned = [row for name, row in rows.items() if name != "dense"]
    assert all(row["macs_ratio"] < 0.6 for row in pruned)
    stem = next(row for row in pruned if row["protect_stem"])
    assert stem["macs"] > next(row for row in pruned if not row["protect_stem"])["macs"]  # the stem kept
    overhead = json.loads((results / "attention_overhead.json").read_text())
    steps = overhead["median_step_s"]
    assert set(steps) == {"plain_f", "plain_t", "attn_f", "attn_t", "attn_a"}
    rounds = overhead["step_s"]
    per_round = [a / t for a, t in zip(rounds["attn_a"], rounds["plain_t"], strict=True)]
    # a median of per-round ratios, not a ratio of medians: the two differ under load
    assert overhead["a_vs_t"] == pytest.approx(statistics.median(per_round), abs=1e-4)
    assert steps["attn_a"] == pytest.approx(statistics.median(rounds["attn_a"]), abs=1e-4)
    assert all(s > 0 for s in steps.values())  # timings, not compared: the cores may be shared


def test_malloc_quick(results):
    """glibc's defaults against slimfg.launch's tunables, paired: the tuned run reuses freed memory."""
    doc = json.loads((results / "malloc.json").read_text())
    assert doc["complete"] and set(doc["summary"]) == {"train"}
    default, tuned = (next(r for r in doc["runs"] if r["malloc"] == s) for s in ("default", "tuned"))
    assert tuned["minor_faults"] < default["minor_faults"]
    assert doc["summary"]["train"]["minor_faults_tuned_vs_default"] == pytest.approx(
        tuned["minor_faults"] / default["minor_faults"], abs=1e-3
    )


def test_op_latency_quick(results):
    """Kernel time split by kind of op on a lite0: its 16 depthwise convs and 33 others,
    the parts adding up to the whole, and MACs counted from the shapes the kernels ran on."""
    (row,) = json.loads((results / "op_latency.json").read_text())["models"].values()
    assert row["conv_nodes"] == 49
    parts = row["dw_conv_ms"] + row["other_conv_ms"] + row["rest_ms"]
    assert row["ms"] > 0 and parts == pytest.approx(row["ms"], abs=0.03)  # each rounded to 0.01 ms
    assert 0 < row["dw_macs_per_image"] < row["macs_per_image"]


def test_defaults_quick(results):
    """The default path's table: dense, pruned and int8 rows, each scored on val (no test
    split in the sample), pruned at under half the MACs, and a time for every stage."""
    doc = json.loads((results / "defaults_quick.json").read_text())
    rows = doc["rows"]
    assert list(rows) == ["dense", "pruned", "int8"]
    assert all(0 <= r["val_top1"] <= 1 and "test_top1" not in r for r in rows.values())
    assert (
        rows["pruned"]["macs"] < 0.5 * rows["dense"]["macs"]
        and rows["int8"]["macs"] == rows["pruned"]["macs"]
    )
    assert set(doc["seconds"]) == {"train", "prune", "export_onnx", "export_int8"}
    assert doc["prune"]["kept_epoch"] in (0, 1) and "slimfg prune" in doc["commands"][1]


def test_report_renders_every_section(results, tmp_path):
    out = tmp_path / "results.md"
    run("report.py", "--results", str(results), "--out", str(out))
    text = out.read_text()
    for heading in (
        "Transfer learning",
        "Recipe sweep over seeds (GPU)",
        "Pruning: accuracy vs MACs",
        "Channel importance at the full fine-tune budget",
        "Deployment latency",
        "Channel rounding",
        "Where ONNX Runtime spends",
        "The default path on flowers10",
        "glibc malloc tunables",
    ):
        assert heading in text
    assert "Not measured yet" not in text
