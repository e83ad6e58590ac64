import json
import math

import pytest
import torch
from safetensors.torch import load_file

from slimfg import artifact, attention, data, models
from slimfg.config import TrainConfig
from slimfg.engine import distill_loss, init_distributed, lr_scheduler
from slimfg.errors import SlimfgError
from slimfg.evaluate import evaluate_artifact
from slimfg.train import set_phase, train


def tiny_config(data, out, **kw) -> TrainConfig:
    base = dict(arch="resnet18", weights="none", image_size=32, batch_size=4, workers=0, seed=3)
    return TrainConfig(data=str(data), out=str(out), **{**base, **kw})


def test_phases_train_only_their_parameters():
    model = attention.attach(models.build("resnet18", 5, "none"), "out")
    counts = {p: sum(t.numel() for t in set_phase(model, p)) for p in "fabtsj"}
    assert counts["f"] == 512 * 5 + 5
    assert counts["a"] == sum(m.weight.shape[0] for m in attention.convs(model).values())
    assert counts["b"] == sum(
        m.weight.numel() * 2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert counts["t"] == sum(p.numel() for p in model.parameters())
    assert counts["s"] == counts["a"] + counts["b"] // 2  # attention + BN beta
    assert counts["j"] == counts["a"] + counts["f"]  # attention + head
    for phase in "asj":
        set_phase(model, phase)
        assert not model.bn1.training and model.training
    set_phase(model, "b")
    assert model.bn1.training


def test_train_writes_metrics_checkpoint_and_artifact(tiny_data, tmp_path):
    out = tmp_path / "run"
    path = train(tiny_config(tiny_data, out, schedule="fab"))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["f", "a", "b"]
    for key in ("loss", "train_acc", "val_top1", "val_top5", "images_per_s", "seconds", "trainable_params"):
        assert all(key in h for h in history)
    assert json.loads((out / "config.json").read_text())["schedule"] == "fab"
    model, card = artifact.load(path)
    assert card.arch == "resnet18" and card.num_classes == 3 and card.attention["mode"] == "out"
    assert set(card.attention["scores"]) == set(attention.convs(model))
    assert not attention.modules(model)  # stored folded
    # The artifact's accuracy on val is the trainer's last measurement.
    assert evaluate_artifact(str(path), str(tiny_data), workers=0)["top1"] == pytest.approx(
        history[-1]["val_top1"]
    )
    assert not list(out.glob(".*tmp*"))


def test_attention_phase_keeps_pretrained_convs_frozen(tiny_data, tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(3)
    reference = models.build("resnet18", 3, "none").state_dict()
    train(tiny_config(tiny_data, out, schedule="a", lr={"a": 0.05}))
    ckpt = load_file(out / "checkpoint.safetensors")
    assert torch.equal(
        ckpt["layer1.0.conv1.parametrizations.weight.original"], reference["layer1.0.conv1.weight"]
    )
    assert torch.equal(ckpt["bn1.weight"], reference["bn1.weight"])
    assert not torch.equal(
        ckpt["layer1.0.conv1.parametrizations.weight.0.attention"], torch.ones(64, 1, 1, 1)
    )


def test_same_seed_same_result_and_refuses_to_overwrite(tiny_data, tmp_path):
    a = train(tiny_config(tiny_data, tmp_path / "a", schedule="fa"))
    b = train(tiny_config(tiny_data, tmp_path / "b", schedule="fa"))
    assert torch.equal(load_file(a)["fc.weight"], load_file(b)["fc.weight"])
    with pytest.raises(SlimfgError, match="already holds a run"):
        train(tiny_config(tiny_data, tmp_path / "a", schedule="fa"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"schedule": "fx"}, "phase letters"),
        ({"schedule": "fs", "attention": "none"}, r"attention \('a' or 's'\) phases"),
        ({"reg": "l1"}, "reg-lambda"),
        ({"distill": 0.5}, "--teacher"),
        ({"distill": 1.5, "teacher": "x"}, "--distill must be"),
        ({"lr_decay": "linear"}, "--lr-decay"),
        ({"warmup": 1.0}, "--warmup"),
        ({"crop_scale": 0.0}, "--crop-scale"),
    ],
)
def test_bad_config(tiny_data, tmp_path, kw, message):
    with pytest.raises(SlimfgError, match=message):
        train(tiny_config(tiny_data, tmp_path / "run", **kw))
    assert not (tmp_path / "run").exists()


def test_distill_loss_is_zero_only_for_the_teacher():
    t = torch.randn(8, 5)
    assert distill_loss(t, t, 2.0).abs() < 1e-6
    assert distill_loss(torch.randn(8, 5), t, 2.0) > 0.01


def test_distillation_pulls_the_student_toward_the_teacher(tiny_data, tmp_path):
    """A student trained only on the teacher's soft targets (distill=1) ends closer to the
    teacher's predictions than the same student trained on the labels alone."""
    # anchor_bn off: on 12 images of a random-init net its statistics are noise, and the
    # comparison is about the loss alone
    teacher = train(
        tiny_config(tiny_data, tmp_path / "teacher", schedule="ttt", attention="none", anchor_bn=False)
    )
    kl = {}
    for name, kw in {"labels": {}, "distill": {"teacher": str(teacher), "distill": 1.0}}.items():
        run = tiny_config(
            tiny_data, tmp_path / name, schedule="tt", attention="none", seed=7, anchor_bn=False, **kw
        )
        student, card = artifact.load(train(run))
        t_model, _ = artifact.load(teacher)
        x = data.batch_images(data.sample_batches(data.load(tiny_data).train, card.preprocessing, 12))
        with torch.no_grad():
            kl[name] = distill_loss(student.eval()(x), t_model.eval()(x), 1.0).item()
    assert kl["distill"] < kl["labels"], kl


def test_prune_regulariser_pulls_the_planned_channels_to_zero(tiny_data, tmp_path):
    """`--reg prune` drives the attention of the channels pruning would cut toward 0 and
    leaves the others; without it the lowest half stays near its init of 1."""
    from slimfg.pruning.importance import AttentionImportance  # noqa: F401  (torch-pruning is importable)

    low = {}
    for name, kw in {"plain": {}, "prune": {"reg": "prune", "reg_lambda": 10.0, "reg_keep": 0.5}}.items():
        cfg = tiny_config(
            tiny_data,
            tmp_path / name,
            schedule="aaaaa",
            lr={"a": 0.1},
            reg_round_to=1,
            lr_decay="none",
            keep_best=False,
            **kw,
        )  # the pull at a constant lr, to the end
        _, card = artifact.load(train(cfg))
        s = torch.tensor(card.attention["scores"]["layer1.0.conv1"]).sort().values
        low[name], high = s[:32].mean().item(), s[32:].mean().item()
    assert low["prune"] < 0.2 < 0.6 < low["plain"] and high > 0.6, (low, high)


def test_cosine_lr_spans_the_whole_schedule():
    """With 3 epochs of 4 batches, the lr falls along one cosine across the epochs, each
    epoch's fresh optimizer picking up where the last one ended; `none` keeps it flat,
    after the warm-up ramp if one is asked for."""
    lrs = []
    for epoch in range(3):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = lr_scheduler(optimizer, "cosine", epoch, 3, 4)
        for _ in range(4):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    expected = [0.05 * (1 + math.cos(math.pi * i / 12)) for i in range(12)]
    assert lrs == pytest.approx(expected)
    lrs = []
    for epoch in range(2):  # warm-up over the first quarter of 2 x 4 batches, constant after
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = lr_scheduler(optimizer, "none", epoch, 2, 4, warmup=0.25)
        for _ in range(4):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert (
        lr_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), "none", 0, 3, 4) is None
    )


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has a GPU per process")
def test_torchrun_cuda_needs_a_gpu_per_process(monkeypatch):
    # checked before any process group starts; with `auto` the processes fall back to CPU
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(SlimfgError, match="2 processes per node needs as many GPUs"):
        init_distributed("cuda")


def test_bn_is_anchored_when_a_bn_training_phase_begins(tiny_data, tmp_path, caplog):
    """Before the first `t` epoch after BN-eval phases (not before `f`, not between two `t`)."""
    caplog.set_level("INFO", logger="slimfg")
    train(tiny_config(tiny_data, tmp_path / "run", schedule="fjtt"))
    anchored = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("BatchNorm statistics anchored")
    ]
    assert anchored == ["BatchNorm statistics anchored on 512 training images before phase t"]


def test_one_optimizer_per_phase_and_resume_inside_a_phase_replays_it(tiny_data, tmp_path, monkeypatch):
    """`ftt`: the two `t` epochs share one Adam; a run stopped after its first `t` epoch and
    resumed continues that Adam from the checkpoint, so it matches the straight run."""
    cfg = dict(schedule="ftt", lr={"f": 1e-2, "t": 1e-3}, lr_decay="cosine")
    straight = train(tiny_config(tiny_data, tmp_path / "straight", **cfg))
    want = artifact.read_card(straight).train["history"]

    write = artifact.write

    def killed_after_epoch_2(path, tensors, meta):
        write(path, tensors, meta)
        if meta.get("kind") == "checkpoint" and meta["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "write", killed_after_epoch_2)
    for run in ("killed", "no_optim"):
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tiny_data, tmp_path / run, **cfg))
    monkeypatch.setattr(artifact, "write", write)
    ckpt = tmp_path / "no_optim" / "checkpoint.safetensors"
    tensors, meta = artifact.read(ckpt)
    assert any(k.startswith("optimizer.") and k.endswith("exp_avg_sq") for k in tensors)

    got = artifact.read_card(train(tiny_config(tiny_data, tmp_path / "killed", resume=True, **cfg)))
    for g, w in zip(got.train["history"], want, strict=True):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6) and g["val_top1"] == w["val_top1"]
    # Without the saved Adam state the third epoch starts a fresh Adam and takes another path.
    artifact.write(ckpt, {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, meta)
    fresh = artifact.read_card(train(tiny_config(tiny_data, tmp_path / "no_optim", resume=True, **cfg)))
    assert fresh.train["history"][2]["loss"] != pytest.approx(want[2]["loss"], rel=1e-4)


def test_a_kill_between_metrics_and_checkpoint_resumes_with_the_checkpoints_metrics(
    tiny_data, tmp_path, monkeypatch
):
    """metrics.jsonl is written before the checkpoint, so every checkpointed epoch is in it;
    a kill between the two leaves one row ahead, which `--resume` replaces."""
    cfg = dict(schedule="ftt", lr={"f": 1e-2, "t": 1e-3})
    write = artifact.write

    def killed_before_checkpoint_2(path, tensors, meta):
        if meta.get("kind") == "checkpoint" and meta["epoch"] == 2:
            raise KeyboardInterrupt
        write(path, tensors, meta)

    monkeypatch.setattr(artifact, "write", killed_before_checkpoint_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, tmp_path / "run", **cfg))
    monkeypatch.setattr(artifact, "write", write)
    rows = lambda: [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert artifact.read_meta(tmp_path / "run" / "checkpoint.safetensors")["epoch"] == 1
    assert [r["epoch"] for r in rows()] == [1, 2]

    card = artifact.read_card(train(tiny_config(tiny_data, tmp_path / "run", resume=True, **cfg)))
    assert [r["epoch"] for r in rows()] == [1, 2, 3]
    assert [r["loss"] for r in rows()] == [r["loss"] for r in card.train["history"]]


def test_bf16_on_cpu_is_opt_in_and_fp16_is_refused(tiny_data, tmp_path):
    """--amp bf16 trains under CPU autocast (other numerics than fp32 from the same seed) with
    fp32 weights; auto stays fp32 on CPU (same weights as none); fp16 is refused in one line."""
    last = dict(schedule="t", keep_best=False)  # the trained weights, not the start
    runs = {amp: load_file(train(tiny_config(tiny_data, tmp_path / amp, amp=amp, **last)))
            for amp in ("none", "auto", "bf16")}  # fmt: skip
    assert all(torch.equal(runs["none"][k], runs["auto"][k]) for k in runs["none"])
    floats = [k for k, v in runs["bf16"].items() if v.is_floating_point()]
    assert all(runs["bf16"][k].dtype == torch.float32 for k in floats)
    assert not all(torch.equal(runs["none"][k], runs["bf16"][k]) for k in floats)
    with pytest.raises(SlimfgError, match="fp16 needs a CUDA device"):
        train(tiny_config(tiny_data, tmp_path / "fp16", schedule="t", amp="fp16"))


def test_t_epochs_leave_the_attention_the_j_epoch_learned(tiny_data, tmp_path):
    """The default `jtttt` ranks channels by the attention of its `j` epoch: in `t`, BatchNorm
    in train mode normalises each channel's scale away, so the attention barely moves."""

    def attention_after(schedule):
        cfg = tiny_config(tiny_data, tmp_path / schedule, schedule=schedule, lr={"j": 0.05, "t": 1e-3},
                          keep_best=False, lr_decay="none")  # fmt: skip
        card = artifact.read_meta(train(cfg))
        return torch.cat([torch.tensor(s) for s in card["attention"]["scores"].values()])

    learned, kept = attention_after("j"), attention_after("jtt")
    moved = (learned - 1).abs().max()
    assert moved > 0.05  # the j epoch changed the attention
    assert (kept - learned).abs().max() < 0.2 * moved


def test_weight_average_competes_for_the_kept_state(small_data, tmp_path):
    """--ema: the average is scored every epoch next to the trained weights, leaves their
    trajectory as it was, and is what the artifact holds when it scores best (here at epoch 3)."""
    common = dict(schedule="tttt", lr={"t": 3e-3})
    plain = artifact.read_card(train(tiny_config(small_data, tmp_path / "plain", **common)))
    path = train(tiny_config(small_data, tmp_path / "ema", ema=0.9, **common))
    card = artifact.read_card(path)
    history = card.train["history"]
    assert [h["val_top1"] for h in history] == [h["val_top1"] for h in plain.train["history"]]
    best_average = max(h["val_top1_ema"] for h in history)
    assert best_average > max(h["val_top1"] for h in history)  # the case this test is for
    assert card.train["kept_weights"] == "ema" and card.metrics["val_top1"] == best_average
    assert history[card.train["kept_epoch"] - 1]["val_top1_ema"] == best_average
    assert evaluate_artifact(str(path), str(small_data), workers=0)["top1"] == pytest.approx(best_average)
    assert plain.train["kept_weights"] == "trained" and "val_top1_ema" not in plain.train["history"][0]
