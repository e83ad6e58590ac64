"""Pruning to a budget: --target-macs, --target-latency and the staged --max-drop search;
the cut to --keep in stages (--stages)."""

import itertools
import json

import pytest
import torch
from click.testing import CliRunner

from slimfg import artifact, pipeline
from slimfg.cli import main
from slimfg.config import DEFAULT_LR, LATER_STAGE_LR, STAGE_MACS, TrainConfig
from slimfg.errors import SlimfgError
from slimfg.pruning.graph import count, example_input
from slimfg.pruning.pruner import pruned_copy
from slimfg.search import keep_for, macs_cost
from slimfg.train import train
from tests.test_prune import SIZE, X, attention_model, prune_job

FAST = {"batch_size": 4, "workers": 0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_data_shared):
    """A resnet18 trained with attention for one epoch on the tiny dataset, at 32 px."""
    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=str(tiny_data_shared), out=str(run), arch="resnet18", weights="none",
                      schedule="a", image_size=32, **FAST)  # fmt: skip
    return train(cfg)


@pytest.mark.parametrize("target", [0.5, 0.35])
def test_keep_for_finds_the_largest_keep_within_a_macs_target(target):
    model, _ = attention_model("resnet18")
    dense_macs = count(model, X)["macs"]
    cost = macs_cost(dense_macs, SIZE)
    keep, probes = keep_for(model, X, cost, target, round_to=8)
    assert cost(pruned_copy(model, X, keep, round_to=8)) <= target
    # bisection: a probe just above the answer (within 1/128 of the range) was over the target
    assert any(keep < p["keep"] <= keep + 1 / 128 and p["cost"] > target for p in probes)
    assert count(model, X)["macs"] == dense_macs  # the model itself was not cut


def test_keep_for_reaches_a_target_that_the_smallest_keep_misses():
    """Cost is not monotonic at tiny keeps: with channels rounded to 16, a group that keep
    0.05 would cut to nothing is left whole (resnet18 here: 0.39x MACs at keep 0.05, about
    0.2x at 0.25), so 0.25x is reached from above, not refused."""
    model, _ = attention_model("resnet18")
    cost = macs_cost(count(model, X)["macs"], SIZE)
    assert cost(pruned_copy(model, X, 0.05, round_to=16)) > 0.25
    keep, _ = keep_for(model, X, cost, 0.25, round_to=16)
    assert cost(pruned_copy(model, X, keep, round_to=16)) <= 0.25 and keep > 0.05


def test_keep_for_refuses_an_unreachable_target():
    model, _ = attention_model("resnet18")
    with pytest.raises(SlimfgError, match="no keep meets the target"):
        keep_for(model, X, macs_cost(count(model, X)["macs"], SIZE), 1e-4)


def test_target_macs_prunes_to_the_target(tiny_model, tiny_data_shared, tmp_path):
    out = tmp_path / "p.safetensors"
    report = prune_job(
        tiny_model, out, target_macs=0.4, data=str(tiny_data_shared), finetune="", latency=False
    )
    ratio = report["after"]["macs"] / report["before"]["macs"]
    assert ratio <= 0.4 and report["search"]["target"] == {"macs_ratio": 0.4}
    model, card = artifact.load(out)
    assert count(model, example_input(32))["macs"] == report["after"]["macs"]
    assert card.pruning["keep"] == report["search"]["keep"] < 1
    assert card.pruning["global"] is True  # the default with --data, fitted to the target itself
    assert ratio >= 0.97 * 0.4


def test_target_latency_measures_the_runtime(tiny_model, tmp_path):
    """A latency target of 0.6 of the dense model's, timed in ONNX Runtime at batch 32 (no data:
    the bundled sample verifies the probe exports). Timing noise must not decide the outcome
    (CI once timed the dense model 1/3 slower than the search's own probe did): the dense
    latency is the fastest of three timings, and at batch 32 the dense model takes about 10 ms
    here and every pruned copy about 4 ms, keep 0.6 and 0.05 alike, so the target sits well
    between the two."""
    from slimfg.search import latency_cost

    model, card = artifact.load(tiny_model)
    timing = latency_cost(card, "onnx", 32, None)
    target_ms = min(timing(model) for _ in range(3)) * 1e3 * 0.6
    out = tmp_path / "p.safetensors"
    report = prune_job(tiny_model, out, target_latency=target_ms, batch=32, latency=False)
    search = report["search"]
    assert search["runtime"] == "onnx" and search["batch"] == 32
    assert 0.05 <= search["keep"] < 1
    assert [p for p in search["probes"] if p["keep"] == search["keep"]][0]["cost"] <= target_ms * 1e-3
    assert artifact.load(out)[1].pruning["global"] is False  # the probes were timed per layer


def test_max_drop_prunes_in_stages_and_reports_the_frontier(tiny_model, tiny_data_shared, tmp_path,
                                                           monkeypatch):  # fmt: skip
    """--quick --max-drop 100: every stage is within budget, so the search runs down to
    MIN_MACS (0.4 here, two stages, to keep the test short); the frontier is complete, its
    MACs fall by about STAGE_MACS a stage, and the saved model is the last stage, replayed
    exactly from the stacked pruning record."""
    monkeypatch.setattr(pipeline, "MIN_MACS", 0.4)
    out = tmp_path / "p.safetensors"
    report = prune_job(tiny_model, out, max_drop=100, quick=True, data=str(tiny_data_shared), latency=False,
                       **FAST)  # fmt: skip
    frontier = json.loads((tmp_path / "p_frontier.json").read_text())
    assert frontier["complete"] and (tmp_path / "p_frontier.png").stat().st_size > 0
    points = frontier["points"]
    assert frontier["chosen"] == len(points) - 1 >= 2
    ratios = [p["macs_ratio"] for p in points]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] == 1.0
    assert ratios[-1] * STAGE_MACS < 0.4 <= ratios[-1] < 0.5
    for before, after in itertools.pairwise(ratios):  # --global fills each stage's target
        assert 0.97 * STAGE_MACS * before <= after <= STAGE_MACS * before
    assert all(p["latency_s"] > 0 for p in points)
    model, card = artifact.load(out)
    assert len(card.pruning["stages"]) == len(points) - 1
    assert count(model, example_input(32))["macs"] / report["before"]["macs"] == pytest.approx(ratios[-1])
    assert frontier["final"]["macs_ratio"] == pytest.approx(ratios[-1])
    assert report["finetune"] == "t"  # --quick: one epoch a stage
    assert report["pruned_val_top1"] is None  # the chosen stage is saved as it recovered, no second recovery
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p.safetensors", "p_frontier.json", "p_frontier.png"]
    x = torch.randn(2, 3, 32, 32)
    again, _ = artifact.load(out)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), again.eval()(x))


def test_max_drop_stops_at_the_first_stage_over_budget(tiny_model, tiny_data_shared, tmp_path, monkeypatch):
    """With no drop allowed the first stage that loses val accuracy ends the search; the
    saved model is the last stage that did not (or the first stage when none held)."""
    monkeypatch.setattr(pipeline, "MIN_MACS", 0.4)
    prune_job(tiny_model, tmp_path / "p.safetensors", max_drop=0, quick=True, data=str(tiny_data_shared),
              latency=False, **FAST)  # fmt: skip
    frontier = json.loads((tmp_path / "p_frontier.json").read_text())
    points, chosen = frontier["points"], frontier["chosen"]
    floor = frontier["floor_val_top1"]
    n, p = frontier["val_images"], points[0]["val_top1"]
    assert n == 6 and frontier["val_top1_se"] == pytest.approx((p * (1 - p) / n) ** 0.5)
    assert all(p["val_top1"] >= floor for p in points[1 : chosen + 1]) or chosen == 1
    if points[-1]["macs_ratio"] * STAGE_MACS >= 0.4:  # it stopped early: on a stage under the floor
        assert points[-1]["val_top1"] < floor


@pytest.mark.parametrize("stages", [2, 3])
def test_stages_end_at_the_one_cut_macs(tiny_model, tiny_data_shared, tmp_path, stages):
    """--stages N: cuts to the one cut's MACs ratio to the powers 1/N, 2/N, ..., each but the
    last fine-tuned, the last at the one cut's MACs (within 3%, at most); the saved model replays every cut,
    and the runs of the earlier stages leave nothing on disk."""
    out = tmp_path / "p.safetensors"
    report = prune_job(tiny_model, out, keep=0.5, stages=stages, data=str(tiny_data_shared), finetune="t",
                       latency=False, **FAST)  # fmt: skip
    record = report["stages"]
    one, aim, rows = record["one_cut"]["macs_ratio"], record["macs_target"], record["stages"]
    per_layer = pruned_copy(artifact.load(tiny_model)[0], example_input(32), 0.5)
    assert aim == macs_cost(report["before"]["macs"], 32)(per_layer)  # what --global spends at keep 0.5
    assert record["count"] == len(rows) == stages and one <= aim < 0.5
    for i, row in enumerate(rows, 1):  # each stage's --global cut fills its MACs target (not 0.75 of it)
        assert 0.97 * aim ** (i / stages) <= row["macs_ratio"] <= aim ** (i / stages)
    for row in rows[:-1]:
        assert aim < row["macs_ratio"] and "val_top1" in row
    assert [row["macs_ratio"] for row in rows] == sorted((row["macs_ratio"] for row in rows), reverse=True)
    assert "val_top1" not in rows[-1]
    assert report["after"]["macs"] / report["before"]["macs"] == pytest.approx(rows[-1]["macs_ratio"])
    assert report["pruned_val_top1"] == rows[-1]["repaired_val_top1"]  # what the final fine-tune started from
    model, card = artifact.load(out)
    assert [float(k) for k in card.pruning["stages"]] == [row["keep"] for row in rows]
    assert count(model, example_input(32))["macs"] == report["after"]["macs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors", "p_finetune"]
    # the last stage fine-tunes at LATER_STAGE_LR of the lr
    final_lr = json.loads((tmp_path / "p_finetune" / "config.json").read_text())["lr"]
    assert final_lr == {phase: lr * LATER_STAGE_LR for phase, lr in DEFAULT_LR.items()}
    assert record["later_stage_lr"] == LATER_STAGE_LR


@pytest.mark.parametrize(("drop", "stages"), [(-0.1, 1), (0.013, 1), (0.031, 1), (0.05, 1), (0.084, 2),
                                              (0.105, 2), (0.6, 2)])  # fmt: skip
def test_default_stages_two_beyond_five_points_of_repair_drop(drop, stages):
    """The repair drops of the four datasets' one cut (ucmerced21 1.3, flowers102 3.1,
    cars49 8.4, cub50 10.5 points) give 1, 1, 2 and 2 stages; three only when asked."""
    assert pipeline.default_stages(drop) == stages


@pytest.mark.parametrize(("max_repair_drop", "count_"), [(1.0, 1), (-1.0, 2)])
def test_default_stages_follow_the_repair_drop(tiny_model, tiny_data_shared, tmp_path, monkeypatch,
                                               max_repair_drop, count_):  # fmt: skip
    """With no --stages, the one cut's repair decides: within STAGED_REPAIR_DROP of the
    unpruned val top-1 it is kept (and fine-tuned), beyond it two stages run."""
    monkeypatch.setattr(pipeline, "STAGED_REPAIR_DROP", max_repair_drop)
    report = prune_job(tiny_model, tmp_path / "p.safetensors", keep=0.5, data=str(tiny_data_shared),
                       finetune="t", latency=False, **FAST)  # fmt: skip
    record = report["stages"]
    assert record["count"] == count_ and ("stages" in record) == (count_ > 1)
    assert record["repair_drop"] == pytest.approx(
        report["before"]["val_top1"] - record["one_cut"]["repaired_val_top1"]
    )
    if count_ == 1:
        assert report["pruned_val_top1"] == record["one_cut"]["repaired_val_top1"]
        ratio = report["after"]["macs"] / report["before"]["macs"]
        assert ratio == pytest.approx(record["one_cut"]["macs_ratio"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--keep", "0.5", "--target-macs", "0.3"], "--keep and --target-macs are alternatives"),
        (["--max-drop", "1"], "--max-drop needs --data"),
        (["--target-macs", "0.3", "--target-latency", "2"], "give one budget"),
        (["--target-latency", "2", "--global"], "works with --per-layer pruning"),
        (["--max-drop", "1", "--data", "DATA", "--finetune", ""], "--max-drop needs a fine-tune"),
        (["--stages", "2"], "--stages 2 needs --data DIR and a fine-tune"),
        (["--stages", "2", "--max-drop", "1", "--data", "DATA"], "--stages 2 works with --keep"),
        (["--stages", "4"], "Invalid value for '--stages'"),
        (["--stages", "2", "--data", "DATA", "--importance", "attention"], "--stages 2 needs a ranking"),
    ],
)
def test_budget_option_errors_are_one_line(tiny_model, tiny_data_shared, tmp_path, args, fragment):
    out = tmp_path / "p.safetensors"
    args = [str(tiny_data_shared) if a == "DATA" else a for a in args]
    result = CliRunner().invoke(main, ["prune", str(tiny_model), "--out", str(out), *args])
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_stop_at_ends_training_once_val_reaches_it(tiny_data_shared, tmp_path):
    """The trainer's early stop (a --max-drop stage): a target of 0 is reached after the
    first epoch, so a 3-epoch schedule runs one."""
    cfg = TrainConfig(data=str(tiny_data_shared), out=str(tmp_path / "run"), arch="resnet18", weights="none",
                      schedule="fff", image_size=32, stop_at=0.0, keep_best=False, **FAST)  # fmt: skip
    _, card = artifact.load(train(cfg))
    assert [h["epoch"] for h in card.train["history"]] == [1] and card.train["kept_epoch"] == 1
