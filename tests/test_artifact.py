import json

import pytest
import torch
from safetensors.torch import save_file

from slimfg import artifact, models
from slimfg.card import ModelCard
from slimfg.errors import SlimfgError

META = {"arch": "resnet18", "num_classes": 4, "classes": list("abcd"), "preprocessing": {}}
CARD = ModelCard(**META)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = models.build("resnet18", 4, "none").eval()
    path = tmp_path / "m.safetensors"
    artifact.save(path, model, CARD)
    return path, model


def test_roundtrip_is_exact(saved):
    path, model = saved
    loaded, card = artifact.load(path)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert card.classes == list("abcd") and card.provenance["torch"] == torch.__version__


def test_not_safetensors(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SlimfgError, match="not a slimfg artifact"):
        artifact.load(tmp_path / "x.safetensors")


def test_foreign_safetensors(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(SlimfgError, match="no slimfg metadata"):
        artifact.load(tmp_path / "x.safetensors")


def test_truncated(saved):
    path, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SlimfgError, match="truncated"):
        artifact.load(path)


def test_arch_mismatch(saved, tmp_path):
    path, model = saved
    other = tmp_path / "other.safetensors"
    artifact.write(other, model.state_dict(), {**META, "format": "slimfg", "arch": "resnet34"})
    with pytest.raises(SlimfgError, match="does not match its arch 'resnet34'"):
        artifact.load(other)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError):
        artifact.write(path, {"w": torch.zeros(2)}, {"bad": object()})  # not JSON-able
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_plain_json(saved):
    path, _ = saved
    meta = artifact.read_meta(path)
    assert json.loads(json.dumps(meta)) == meta and meta["format"] == "slimfg"
