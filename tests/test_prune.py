import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from slimfg import artifact, attention, models
from slimfg.card import ModelCard
from slimfg.config import DEFAULT_LR, FINETUNE_STEPS, PruneConfig, TrainConfig, default_finetune
from slimfg.errors import SlimfgError
from slimfg.pipeline import prune_artifact
from slimfg.pruning.graph import count, example_input, stem_convs
from slimfg.pruning.importance import attention_taylor_scores
from slimfg.pruning.pruner import drop_plan, prune
from slimfg.pruning.repair import anchor_bn, bn_input_stats, match_bn, refit
from slimfg.train import train

SIZE = 64
X = example_input(SIZE)


def attention_model(arch: str, classes: int = 5, seed: int = 0):
    """A model with random weights and random `out` attention, folded, plus its card."""
    torch.manual_seed(seed)
    model = attention.attach(models.build(arch, classes, "none"), "out")
    with torch.no_grad():
        for p in attention.parameters(model):
            p.uniform_(0.2, 1.5)
    scores = {k: v.tolist() for k, v in attention.scores(model).items()}
    attention.fold(model)
    card = ModelCard(
        arch=arch,
        num_classes=classes,
        classes=[str(i) for i in range(classes)],
        preprocessing=models.preprocessing(arch, SIZE),
        attention={"mode": "out", "scores": scores},
    )
    return model.eval(), card


def prune_model(model, card, keep, importance="attention", **options):
    """`prune` with the card's attention scores, on a SIZE-px example input."""
    return prune(model, X, keep=keep, importance=importance, scores=card.attention["scores"], **options)


def prune_job(model: str, out: str, **options) -> dict:
    return prune_artifact(PruneConfig(model=str(model), out=str(out), **options))


def assert_reloads_exactly(model, card, result, tmp_path) -> torch.Tensor:
    """Saved with its pruning record and loaded again, the pruned model computes exactly
    what it did; returns its output on random images."""
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        y = model(x)
    path = tmp_path / "p.safetensors"
    artifact.save(path, model, replace(card, pruning=result.record()))
    loaded, _ = artifact.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    return y


ARCHS = [
    "tf_efficientnet_lite0",
    "resnet18",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
    "convnext_tiny",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_save_reload_identical(arch, tmp_path):
    model, card = attention_model(arch)
    before = count(model, X)
    result = prune_model(model, card, keep=0.5, keep_residual=0.5)  # half of every group
    after = count(model, X)
    assert (result.before, result.after) == (before, after)
    assert after["params"] < 0.6 * before["params"] and after["macs"] < 0.6 * before["macs"]
    y = assert_reloads_exactly(model, card, result, tmp_path)
    assert y.shape == (2, 5) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ["googlenet", "mnasnet1_0", "shufflenet_v2_x1_0"])
def test_models_that_used_to_fail_prune_and_reload(arch, tmp_path, caplog):
    """Auxiliary heads (googlenet), a versioned state dict (MNASNet), a channel shuffle
    (ShuffleNetV2: the layers whose channels pass through it stay whole, with a warning)."""
    model, card = attention_model(arch)
    result = prune_model(model, card, keep=0.5)
    assert result.after["params"] < 0.7 * result.before["params"]
    assert ("channel shuffle" in caplog.text) == arch.startswith("shufflenet")
    assert_reloads_exactly(model, card, result, tmp_path)


def test_keep_one_changes_nothing():
    model, card = attention_model("resnet18")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        y = model(x)
        assert prune_model(model, card, keep=1.0).history == []
        assert torch.equal(model(x), y)


def test_attention_ranking_drops_the_lowest_channels():
    """In a residual-free layer, exactly the lowest-attention channels go."""
    model, card = attention_model("resnet18")
    scores = torch.tensor(card.attention["scores"]["layer1.0.conv1"])
    expected_kept = sorted(torch.argsort(scores, descending=True)[:32].tolist())
    with torch.no_grad():  # tag each channel through the BN that follows the conv
        model.layer1[0].bn1.weight.copy_(torch.arange(64.0))
    prune_model(model, card, keep=0.5, round_to=None)
    assert model.layer1[0].conv1.out_channels == 32
    assert model.layer1[0].bn1.weight.tolist() == [float(i) for i in expected_kept]


def test_round_to_gives_multiples():
    model, card = attention_model("mobilenet_v3_large")
    prune_model(model, card, keep=0.6, round_to=8)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels > 8]
    assert convs and all(m.out_channels % 8 == 0 for m in convs[1:])


def test_protect_stem_leaves_the_stem_stage_unpruned():
    model, card = attention_model("tf_efficientnet_lite0")
    names = {m: n for n, m in model.named_modules()}
    stem = {names[m]: m.out_channels for m in stem_convs(model, X)}
    # lite0: the stem, the first block, and the expansion conv that still runs at 1/2 resolution
    assert set(stem) == {"conv_stem", "blocks.0.0.conv_dw", "blocks.0.0.conv_pw", "blocks.1.0.conv_pw"}
    prune_model(model, card, keep=0.5, protect_stem=True)
    assert {n: model.get_submodule(n).out_channels for n in stem} == stem
    assert model.blocks[2][0].conv_pw.out_channels < 240  # later stages are pruned
    bare, card = attention_model("tf_efficientnet_lite0")
    prune_model(bare, card, keep=0.5)  # default: the stem stage is pruned too
    assert bare.conv_stem.out_channels < stem["conv_stem"]


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5])
def test_bad_keep(keep):
    model, card = attention_model("resnet18")
    with pytest.raises(SlimfgError, match="--keep must be in"):
        prune_model(model, card, keep=keep)


def test_model_without_attention_points_to_magnitude(tmp_path):
    model = models.build("resnet18", 3, "none")
    path = tmp_path / "m.safetensors"
    card = ModelCard(arch="resnet18", num_classes=3, classes=["a", "b", "c"],
                     preprocessing=models.preprocessing("resnet18", SIZE))  # fmt: skip
    artifact.save(path, model, card)
    with pytest.raises(SlimfgError, match="--importance magnitude"):
        prune_job(path, tmp_path / "out.safetensors")
    report = prune_job(path, tmp_path / "out.safetensors", importance="magnitude", latency=False)
    assert report["after"]["macs"] < 0.5 * report["before"]["macs"]
    loaded, card = artifact.load(tmp_path / "out.safetensors")
    assert card.pruning["importance"] == "magnitude"
    report = prune_job(
        path, tmp_path / "k1.safetensors", keep=1.0, importance="attention-taylor", latency=False
    )
    assert report["after"]["macs"] == report["before"]["macs"]  # keep 1 ranks nothing


def test_importances_keep_the_channels_they_rank_highest():
    """On a layer where the rankings disagree, each importance keeps its own top channels:
    attention keeps the high-attention half, bn the large-gamma half, magnitude the
    channels whose weights are far the largest (layer1.0.conv1 -> bn1 -> conv2's inputs is a
    residual-free group on resnet18)."""
    model, card = attention_model("resnet18")
    n = 64
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    scale = ((1 + order.float()) / n) ** 6  # the top channels' weights dwarf the rest
    with torch.no_grad():  # three independent orders: weight norm, BN gamma, attention
        model.layer1[0].conv1.weight.mul_(scale[:, None, None, None])
        model.layer1[0].conv2.weight.mul_(scale[None, :, None, None])
        model.layer1[0].bn1.weight.copy_(1e-3 * torch.arange(n, 0, -1).float())
    kept = {}
    for importance in ("attention", "magnitude", "bn", "random"):
        pruned = copy.deepcopy(model)
        result = prune_model(pruned, card, keep=0.5, importance=importance, round_to=None)
        kept[importance] = set(result.kept["layer1.0.conv1"].tolist())
        assert len(kept[importance]) == 32
    attention_top = torch.tensor(card.attention["scores"]["layer1.0.conv1"]).argsort(descending=True)[:32]
    assert kept["attention"] == set(attention_top.tolist())
    assert set(order.argsort(descending=True)[:16].tolist()) <= kept["magnitude"]
    assert kept["bn"] == set(range(32))  # gamma falls with the index
    assert len({frozenset(v) for v in kept.values()}) == 4  # four rankings, four different choices


def test_prune_then_finetune_through_the_cli(tiny_data, tmp_path):
    from click.testing import CliRunner

    from slimfg.cli import main

    run, out = tmp_path / "run", tmp_path / "pruned.safetensors"
    fast = "--batch-size 4 --workers 0".split()
    train = (
        f"train {tiny_data} --out {run} --arch resnet18 --weights none --schedule fa --image-size 32".split()
    )
    result = CliRunner().invoke(main, train + fast)
    assert result.exit_code == 0, result.output
    prune_cmd = (
        f"prune {run / 'model.safetensors'} --out {out} --keep 0.5 --data {tiny_data} --finetune ta".split()
    )
    result = CliRunner().invoke(main, prune_cmd + fast)
    assert result.exit_code == 0, result.output
    for row in ("macs", "val_top1", "latency_b1_s", "latency_b32_s"):
        assert row in result.output
    model, card = artifact.load(out)
    report = card.pruning["report"]
    assert report["after"]["params"] < 0.5 * report["before"]["params"]
    assert report["after"]["latency_b32_s"] > 0
    assert card.pruning["history"] and card.train["schedule"] == "ta" and report["finetune"] == "ta"
    assert card.pruning["importance"] == "attention-taylor"  # the default when there is --data
    assert card.pruning["global"] is True  # and with it, --global
    assert card.attention["mode"] == "out"  # the fine-tune's 'a' phase re-learned attention
    assert count(model, example_input(32))["params"] == report["after"]["params"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data",
        "pruned.safetensors",
        "pruned_finetune",
        "run",
    ]


@pytest.mark.parametrize(("images", "epochs"), [(6552, 3), (1500, 13), (240, 15), (100_000, 3), (1, 15)])
def test_default_finetune_budget_is_steps_not_epochs(images, epochs):
    """Flowers-102 (6,552 train images) gets 3 epochs, a 1,500-image dataset 13: about
    FINETUNE_STEPS optimizer steps each, within 3 to 15 epochs."""
    assert default_finetune(images, 32) == "t" * epochs
    if 3 < epochs < 15:
        assert FINETUNE_STEPS <= epochs * -(-images // 32) < FINETUNE_STEPS + -(-images // 32)


def test_drop_plan_names_exactly_the_channels_prune_removes():
    """`drop_plan` (read from an unfolded, training-time model) agrees with `prune_model`."""
    torch.manual_seed(0)
    live = attention.attach(models.build("tf_efficientnet_lite0", 5, "none"), "out")
    with torch.no_grad():
        for p in attention.parameters(live):
            p.uniform_(0.2, 1.5)
    plan = drop_plan(live, 0.5, X)
    model, card = attention_model("tf_efficientnet_lite0")  # same seed: same weights and attention
    widths = {n: m.out_channels for n, m in attention.convs(model).items()}
    prune_model(model, card, keep=0.5)
    for name, conv in attention.convs(model).items():
        assert widths[name] - conv.out_channels == len(plan.get(name, [])), name
    assert "classifier" not in plan and plan["conv_stem"].numel() == widths["conv_stem"] // 2
    # a residual-free pair: the expansion conv's dropped channels are its lowest-scored ones
    scores = attention.scores(live)
    dw, pw = scores["blocks.1.0.conv_dw"], scores["blocks.1.0.conv_pw"]
    lowest = torch.argsort((dw + pw) / 2)[: len(plan["blocks.1.0.conv_pw"])]
    assert (
        sorted(lowest.tolist()) == plan["blocks.1.0.conv_pw"].tolist() == plan["blocks.1.0.conv_dw"].tolist()
    )


def test_match_bn_restores_the_outputs_when_the_pruned_channels_are_silent():
    """Channels whose attention is 0 still feed a constant (BN's shift) to the next layer;
    `match_bn` puts it back, so pruning them leaves the outputs unchanged on new inputs."""
    torch.manual_seed(0)
    model = attention.attach(models.build("tf_efficientnet_lite0", 5, "none"), "out")
    with torch.no_grad():
        for p in attention.parameters(model):
            p.uniform_(0.5, 1.5)
        for name, idx in drop_plan(model, 0.5, X).items():
            attention.modules(model)[name].attention[idx] = 0.0
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.bias.uniform_(-1, 1)  # a nonzero constant for every silent channel
    scores = attention.scores(model)
    attention.fold(model)
    x, x_new = torch.randn(8, 3, SIZE, SIZE), torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        dense, y = bn_input_stats(model, x), model.eval()(x_new)
    kept = prune(model, X, keep=0.5, importance="attention", scores=scores).kept
    with torch.no_grad():
        scale = y.abs().max()
        assert (model(x_new) - y).abs().max() > 0.05 * scale  # the lost constants matter
        match_bn(model, dense, kept, x)
        assert (model(x_new) - y).abs().max() < 1e-3 * scale


def test_bn_stats_modes_through_prune(tiny_data, tmp_path):
    """`--bn-stats match` and `recal` change the pruned model's BN statistics, `none`
    keeps the unpruned model's for every kept channel, `refit` changes the conv weights
    and then re-anchors the BN statistics to the pruned model's real ones (`anchor_bn`);
    a bad mode is a one-line error."""
    cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path / "run"), arch="resnet18", weights="none",
                      schedule="fa", image_size=32, batch_size=4, workers=0)  # fmt: skip
    dense = train(cfg)
    stats, convs, gammas = {}, {}, {}
    for mode in ("none", "match", "recal", "refit"):
        out = tmp_path / f"{mode}.safetensors"
        prune_job(
            dense, out, keep=0.5, data=str(tiny_data), finetune="", latency=False, bn_stats=mode, bn_batches=2
        )
        model, _ = artifact.load(out)
        stats[mode] = model.layer1[0].bn2.running_mean  # its channels are tied to the stem's
        convs[mode] = model.layer1[0].conv2.weight
        gammas[mode] = model.layer1[0].bn2.weight
    dense_bn = artifact.load(dense)[0].layer1[0].bn2.running_mean
    assert set(stats["none"].tolist()) <= set(dense_bn.tolist())
    assert not torch.equal(stats["match"], stats["none"]) and not torch.equal(stats["recal"], stats["none"])
    assert not torch.equal(convs["refit"], convs["none"]) and not torch.equal(stats["refit"], stats["none"])
    assert not torch.equal(gammas["refit"], gammas["none"])  # anchoring rescales gamma with the statistics
    assert torch.equal(gammas["match"], gammas["none"]) and torch.equal(convs["match"], convs["none"])
    with pytest.raises(SlimfgError, match="--bn-stats"):
        prune_job(dense, tmp_path / "x.safetensors", keep=0.5, data=str(tiny_data), bn_stats="bogus")


def test_refit_recovers_the_unpruned_outputs():
    """`refit` solves each dense conv (k x k with stride and padding, 1 x 1 strided, with
    and without bias) and the Linear for the reference outputs: a copy whose weights were
    scrambled gets the reference's outputs back, on inputs it was not fitted on."""
    torch.manual_seed(0)
    dense = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()  # fmt: skip
    model = copy.deepcopy(dense)
    with torch.no_grad():
        for layer in (m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))):
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
    x, x_new = torch.randn(64, 3, 32, 32), torch.randn(4, 3, 32, 32)  # 64 rows for the Linear
    with torch.no_grad():
        y, before = dense(x_new), model(x_new)
        assert (before - y).abs().max() > 0.1
        done = refit(model, dense, [x], {}, ridge=1e-9)
        assert done == ["0", "3", "5", "9"]
        assert torch.allclose(model(x_new), y, atol=1e-4)


def test_refit_repairs_a_pruned_lite0():
    """After pruning half of every group, refitting lite0's 1 x 1 convs and classifier to
    the unpruned outputs cuts the output error on new inputs."""
    model, card = attention_model("tf_efficientnet_lite0")
    dense = copy.deepcopy(model)
    x, x_new = torch.randn(32, 3, SIZE, SIZE), torch.randn(8, 3, SIZE, SIZE)
    kept = prune_model(model, card, keep=0.5).kept
    with torch.no_grad():
        y = dense(x_new)
        error = (model(x_new) - y).pow(2).mean()
        done = refit(model, dense, [(x, None)], kept)
        assert "conv_head" in done and "classifier" in done and "blocks.1.0.conv_pwl" in done
        assert not any("conv_dw" in name for name in done) and "conv_stem" not in done  # k x k, TF padding
        assert (model(x_new) - y).pow(2).mean() < 0.5 * error


def test_attention_taylor_scores_are_the_squared_gate_gradients():
    """Each filter's score is (d loss / d a)^2 at a = 1, summed over minibatches: checked
    against a central finite difference of the loss when that filter is scaled by 1 +- eps.
    The model comes back with its weights and plain Conv2d classes unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).double().eval()  # fmt: skip
    x, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    scores = attention_taylor_scores(model, zip(x.split(4), y.split(4), strict=True))
    assert set(scores) == {model[0], model[3]} and type(model[0]) is nn.Conv2d
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())

    def loss(xb, yb, conv, channel, eps):
        with torch.no_grad():
            conv.weight[channel] *= 1 + eps
            value = nn.functional.cross_entropy(model(xb), yb).item()
            conv.weight[channel] /= 1 + eps
        return value

    eps = 1e-5
    for conv in (model[0], model[3]):
        for c in range(conv.out_channels):
            grads = [
                (loss(xb, yb, conv, c, eps) - loss(xb, yb, conv, c, -eps)) / (2 * eps)
                for xb, yb in zip(x.split(4), y.split(4), strict=True)
            ]
            assert scores[conv][c].item() == pytest.approx(sum(g * g for g in grads), rel=1e-4, abs=1e-12)


def test_keep_residual_sets_the_share_of_residual_groups():
    """resnet18: the channels a stage's blocks add to are one residual group (stem, conv2 of
    each block), the inner conv1 outputs are not; each gets its own keep."""
    model, card = attention_model("resnet18")
    prune_model(model, card, keep=0.5, keep_residual=1.0, round_to=None)
    assert model.conv1.out_channels == model.layer1[1].conv2.out_channels == 64  # residual: all kept
    assert model.layer1[0].conv1.out_channels == model.layer4[1].conv1.out_channels // 8 == 32
    model, card = attention_model("resnet18")
    prune_model(model, card, keep=0.5, round_to=None)  # default: residual groups lose half as much
    assert model.conv1.out_channels == 48 and model.layer1[0].conv1.out_channels == 32
    with pytest.raises(SlimfgError, match="--keep-residual must be in"):
        prune_model(model, card, keep=0.5, keep_residual=1.5)


def test_gradient_importances_need_data_and_reload_exactly(tiny_data, tmp_path):
    """taylor and attention-taylor read gradients on calibration batches: without them a
    one-line error; with them the saved and reloaded artifact gives exactly the outputs of
    the pruned model in memory, and the prune job records the ranking it used."""
    model, card = attention_model("resnet18")
    for importance in ("taylor", "attention-taylor"):
        with pytest.raises(SlimfgError, match=f"--importance {importance} needs --data"):
            prune_model(model, card, keep=0.5, importance=importance)
    x = torch.randn(4, 3, SIZE, SIZE)
    calib = [(torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 5, (8,))) for _ in range(2)]
    for importance in ("taylor", "attention-taylor"):
        pruned, card = attention_model("resnet18")
        result = prune(pruned, X, keep=0.5, importance=importance, calib=calib)
        assert result.after["params"] < 0.6 * result.before["params"]
        path = tmp_path / f"{importance}.safetensors"
        artifact.save(path, pruned, replace(card, pruning=result.record()))
        loaded, loaded_card = artifact.load(path)
        assert (
            loaded_card.pruning["importance"] == importance and loaded_card.pruning["keep_residual"] == 0.75
        )
        with torch.no_grad():
            assert torch.equal(loaded(x), pruned.eval()(x))
    cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path / "run"), arch="resnet18", weights="none",
                      schedule="fa", image_size=32, batch_size=4, workers=0)  # fmt: skip
    dense = train(cfg)
    report = prune_job(
        dense,
        tmp_path / "job.safetensors",
        keep=0.5,
        importance="taylor",
        data=str(tiny_data),
        finetune="",
        latency=False,
        calib_images=8,
    )
    assert report["after"]["params"] < 0.6 * report["before"]["params"]
    assert artifact.read_card(tmp_path / "job.safetensors").pruning["importance"] == "taylor"


def test_streamed_refit_equals_the_one_batch_solution():
    """The refit sums X'^T X' and X'^T Y over batches: 4 batches of 8 images give the same
    weights as 1 batch of 32 (to float32 rounding, 1e-5 of the weights' scale), on a
    pruned lite0 where every layer sees all of its output positions (no row sampling)."""
    model, card = attention_model("tf_efficientnet_lite0")
    dense = copy.deepcopy(model)
    kept = prune_model(model, card, keep=0.5).kept
    x = torch.randn(32, 3, SIZE, SIZE)
    one, four = copy.deepcopy(model), copy.deepcopy(model)
    assert refit(one, dense, [x], kept) == refit(four, dense, list(x.split(8)), kept)
    for (name, a), b in zip(one.state_dict().items(), four.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * a.abs().max().item()), name
    assert not torch.equal(one.conv_head.weight, model.conv_head.weight)  # the refit changed it


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "resnet18"])
def test_refit_from_cached_block_inputs_equals_the_refit_from_the_image(arch):
    """Inside timm's and torchvision's stages (nn.Sequential) the refit runs each layer
    from its own block's cached input; with no room for the cache (`cache_bytes=0`) it
    runs the model from the image. Both give the same weights, bit for bit."""
    model, card = attention_model(arch)
    dense = copy.deepcopy(model)
    kept = prune_model(model, card, keep=0.5).kept
    batches = list(torch.randn(16, 3, SIZE, SIZE).split(8))
    cached, plain = copy.deepcopy(model), copy.deepcopy(model)
    stem_runs = {}
    for key, net in (("cached", cached), ("plain", plain)):
        stem = net.conv1 if arch == "resnet18" else net.conv_stem
        stem.register_forward_hook(lambda *_, key=key: stem_runs.update({key: stem_runs.get(key, 0) + 1}))
    assert refit(cached, dense, batches, kept) == refit(plain, dense, batches, kept, cache_bytes=0)
    for (name, a), b in zip(cached.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert stem_runs["cached"] * 3 < stem_runs["plain"]  # most layers ran from a cached block input
    assert not torch.equal(cached.fc.weight if arch == "resnet18" else cached.conv_head.weight,
                           model.fc.weight if arch == "resnet18" else model.conv_head.weight)  # fmt: skip


def test_fine_tuning_that_only_hurts_keeps_the_repaired_state(tiny_data, tmp_path):
    """A fine-tune at an absurd lr wrecks the model; with keep_best (the prune default) the
    saved model is the refitted one, exactly, and the report says so; with --keep-last it
    is the wrecked one."""
    # lite0 with its ImageNet weights: accurate enough that wrecking it shows
    cfg = TrainConfig(
        data=str(tiny_data), out=str(tmp_path / "run"), schedule="ff", image_size=64, batch_size=4, workers=0
    )
    dense = train(cfg)
    common = {"keep": 0.5, "data": str(tiny_data), "latency": False, "batch_size": 4, "workers": 0}
    prune_job(dense, tmp_path / "repaired.safetensors", **common, finetune="")
    wreck = {"finetune": "tt", "lr": {**DEFAULT_LR, "t": 50.0}}
    report = prune_job(dense, tmp_path / "best.safetensors", **common, **wreck)
    prune_job(dense, tmp_path / "last.safetensors", **common, **wreck, keep_best=False)
    x = torch.randn(4, 3, 64, 64)
    outputs = {}
    for name in ("repaired", "best", "last"):
        model, card = artifact.load(tmp_path / f"{name}.safetensors")
        with torch.no_grad():
            outputs[name] = model(x)
        if name == "best":
            assert card.train["kept_epoch"] == 0 and card.metrics["epoch"] == 0
            assert report["after"]["val_top1"] == report["pruned_val_top1"] > 0.5
    assert torch.equal(outputs["best"], outputs["repaired"])
    assert not torch.allclose(outputs["last"], outputs["repaired"])


def test_anchor_bn_keeps_the_function_and_makes_batch_statistics_agree():
    """After a cut and a refit, `anchor_bn` sets every BN's running statistics to its real
    input statistics without changing the eval-mode outputs, so a train-mode forward pass
    (batch statistics) computes what the eval-mode network does; before it, it does not."""
    model, card = attention_model("tf_efficientnet_lite0")
    dense = copy.deepcopy(model)
    kept = prune_model(model, card, keep=0.5).kept
    x = torch.randn(64, 3, SIZE, SIZE)
    refit(model, dense, [x], kept)
    with torch.no_grad():
        y = model.eval()(x)
        before = (copy.deepcopy(model).train()(x) - y).abs().max()  # batch statistics disagree
        assert anchor_bn(model, list(x.split(16))) == sum(
            isinstance(m, nn.BatchNorm2d) for m in model.modules()
        )
        assert torch.allclose(model.eval()(x), y, atol=1e-4 * y.abs().max())
        after = (copy.deepcopy(model).train()(x) - y).abs().max()
    assert after < 1e-3 * y.abs().max() < before


def test_channel_macs_is_what_one_channel_costs():
    """Cutting one channel of a group saves exactly `channel_macs` of it: a conv's row, the
    depthwise conv that follows it, the next conv's column. Bias-, activation- and
    pooling-free, because the MACs counter also counts those element-wise ops, which
    `channel_macs` leaves out."""
    from slimfg.pruning.graph import channel_macs, dependency_graph, output_positions

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
        nn.Conv2d(8, 12, 1, bias=False),
        nn.Conv2d(12, 4, 1, bias=False),
    )  # fmt: skip
    x = torch.zeros(1, 3, 16, 16)
    positions = output_positions(net, x)
    for index in (0, 2):
        trial = copy.deepcopy(net)
        graph = dependency_graph(trial, x)
        target = trial[index]
        group = graph.get_pruning_group(target, graph.get_pruner_of_module(target).prune_out_channels, [0])
        expected = channel_macs(group, {trial.get_submodule(n): positions[m] for n, m in net.named_children()
                                        if m in positions})  # fmt: skip
        before = count(trial, x)["macs"]
        group.prune()
        assert before - count(trial, x)["macs"] == expected > 0


def test_global_spends_the_per_layer_macs_where_the_ranking_says(tmp_path):
    """`--global` cuts within the MACs of the per-layer cut (and close to them), leaves
    some groups wider and others narrower than the per-layer cut, and reloads exactly."""
    model, card = attention_model("tf_efficientnet_lite0")
    per_layer = copy.deepcopy(model)
    uniform = prune_model(per_layer, card, keep=0.5)
    result = prune_model(model, card, keep=0.5, global_pruning=True)
    assert 0.9 * uniform.after["macs"] <= result.after["macs"] <= uniform.after["macs"]
    pairs = zip(model.modules(), per_layer.modules(), strict=True)
    widths = [(a.out_channels, b.out_channels) for a, b in pairs if isinstance(a, nn.Conv2d)]
    assert any(a > b for a, b in widths) and any(a < b for a, b in widths)
    assert 0 < result.record()["global_share"] < 1
    assert_reloads_exactly(model, card, result, tmp_path)
