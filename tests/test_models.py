import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from slimfg import models
from slimfg.data import transforms
from slimfg.errors import SlimfgError


@pytest.fixture(scope="module")
def lite0_imagenet():
    return models.build(models.DEFAULT_ARCH, 1000, "imagenet").eval()


@pytest.mark.parametrize(
    ("image", "allowed"),
    [(skdata.chelsea, range(281, 286)), (skdata.coffee, (967, 968))],
    ids=["cat", "espresso"],
)
def test_lite0_weights_map_onto_timm(lite0_imagenet, image, allowed):
    """The package's weights, mapped by position, classify real photos correctly."""
    pre = models.preprocessing(models.DEFAULT_ARCH)
    assert pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.5, 0.5, 0.5]
    x = transforms(pre, train=False)(Image.fromarray(image()))[None]
    with torch.no_grad():
        top = lite0_imagenet(x).softmax(1)
    assert top.argmax().item() in allowed
    assert top[0, list(allowed)].sum().item() > 0.5


@pytest.mark.parametrize(
    ("arch", "head"),
    [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3"), ("timm:resnet10t", "fc")],
)
def test_head_replaced_to_class_count(arch, head):
    model = models.build(arch, 7, "none")
    assert models.classifier_name(model) == head
    assert model.get_submodule(head).out_features == 7
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_arch_suggests_closest():
    with pytest.raises(SlimfgError, match="did you mean 'resnet50'"):
        models.build("resnet5O", 3, "none")


def test_local_weights_safetensors_and_pth(tmp_path):
    source = models.build("resnet18", 1000, "none")
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = models.build("resnet18", 5, str(tmp_path / name))
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert model.fc.out_features == 5  # head of another class count is replaced


def test_weights_file_of_another_arch_is_rejected(tmp_path):
    save_file(models.build("resnet18", 10, "none").state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(SlimfgError, match="do not match arch 'resnet34'"):
        models.build("resnet34", 10, str(tmp_path / "r18.safetensors"))


def test_weights_file_not_a_state_dict(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SlimfgError, match="cannot read weights file"):
        models.build("resnet18", 10, str(tmp_path / "junk.pth"))


def test_imagenet_download_failure_is_one_line(tmp_path, monkeypatch):
    """Offline (forced through a dead proxy), a download names the alternatives."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(SlimfgError, match="could not download ImageNet weights.*--weights none") as e:
        models.build("resnet18", 10, "imagenet")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
def test_auxiliary_heads_are_left_out(arch, tmp_path):
    """Training mode returns one logits tensor, and a torchvision checkpoint with the
    auxiliary heads still loads (their tensors are dropped)."""
    model = models.build(arch, 4, "none").train()
    assert isinstance(model(torch.randn(2, 3, 96, 96)), torch.Tensor)
    full = torchvision.models.get_model(arch, weights=None, aux_logits=True, init_weights=False)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, tmp_path / "w.safetensors")
    loaded = models.build(arch, 4, str(tmp_path / "w.safetensors"))
    stem = "conv1.conv.weight" if arch == "googlenet" else "Conv2d_1a_3x3.conv.weight"
    assert torch.equal(loaded.state_dict()[stem], full.state_dict()[stem])
