import pytest
import timm
import torch
import torchvision
from torch import nn

from slimfg import attention


@pytest.mark.parametrize(("mode", "count"), [("out", 26_560), ("full", 13_385_920)])
def test_resnet50_counts_match_the_paper(mode, count):
    model = attention.attach(torchvision.models.resnet50(), mode)
    assert sum(p.numel() for p in attention.parameters(model)) == count


def test_every_conv_gets_attention_in_lite0():
    model = timm.create_model("tf_efficientnet_lite0")
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    depthwise = sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    attention.attach(model, "out")
    assert len(attention.modules(model)) == n_convs and depthwise > 0
    assert "conv_stem" in attention.modules(model)


def _randomise(model):
    with torch.no_grad():
        for p in attention.parameters(model):
            p.uniform_(0.0, 2.0)


@pytest.mark.parametrize("mode", ["out", "full"])
def test_init_one_is_identity_and_fold_preserves_outputs(mode):
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        plain = model(x)
        attention.attach(model, mode)
        assert torch.allclose(model(x), plain, atol=1e-6)
        _randomise(model)
        before = model(x)
        attention.fold(model)
        after = model(x)
    assert not attention.parameters(model)
    assert set(model.state_dict()) == set(timm.create_model("tf_efficientnet_lite0").state_dict())
    scale = before.abs().max()
    assert (before - after).abs().max() <= 1e-5 * scale
    assert not torch.allclose(before, plain, atol=1e-3)  # the attention did change the net


def test_scores_out_and_full():
    conv = nn.Sequential(nn.Conv2d(4, 3, 3))
    attention.attach(conv, "out")
    with torch.no_grad():
        attention.parameters(conv)[0].copy_(torch.tensor([-2.0, 0.5, 1.0]).view(3, 1, 1, 1))
    assert attention.scores(conv)["0"].tolist() == [2.0, 0.5, 1.0]

    conv = nn.Sequential(nn.Conv2d(2, 2, 1))
    attention.attach(conv, "full")
    with torch.no_grad():
        attention.parameters(conv)[0].copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0]]).view(2, 2, 1, 1))
    assert attention.scores(conv)["0"].tolist() == [5.0, 1.0]


def test_regularisers():
    conv = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 4, 1))
    attention.attach(conv, "out", init=0.5)
    assert attention.regulariser(conv, "l1").item() == pytest.approx(0.5)
    assert attention.regulariser(conv, "mod-l2").item() == pytest.approx(-2 * 0.25)


@pytest.mark.parametrize("mode", ["out", "full"])
def test_attention_is_created_on_the_conv_device(mode):
    # a model already moved to a device (cuda in practice; meta needs no hardware)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)).to("meta")
    attention.attach(model, mode)
    assert {p.device.type for p in attention.parameters(model)} == {"meta"}
