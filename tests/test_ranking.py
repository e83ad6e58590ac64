import json

import pytest
from click.testing import CliRunner
from PIL import Image

from slimfg import artifact, models
from slimfg.card import ModelCard
from slimfg.cli import main
from slimfg.errors import SlimfgError
from slimfg.ranking import NEAR_ZERO, rank
from tests.test_prune import attention_model


def test_rank_writes_json_and_plots(tmp_path):
    model, card = attention_model("resnet18")
    card.attention["scores"]["layer1.0.conv1"][:16] = [0.01] * 16  # 16 of 64 channels are noise
    path = tmp_path / "m.safetensors"
    artifact.save(path, model, card)
    result = rank(str(path), keep=0.5, out_dir=str(tmp_path / "r"))
    saved = json.loads((tmp_path / "r" / "ranking.json").read_text())
    layer = saved["layers"]["layer1.0.conv1"]
    assert layer["near_zero_share"] == 0.25 and NEAR_ZERO == saved["near_zero_threshold"]
    assert set(layer["sorted_indices"][-16:]) == set(range(16))  # noise ranks last
    assert layer["kept_at_keep"] == 32
    assert saved["keep_residual"] == 0.75 and saved["layers"]["layer1.0.conv2"]["kept_at_keep"] == 48
    assert len(saved["layers"]) == 20 and result["groups"]
    stem_group = next(g for g in saved["groups"] if "conv1" in g["members"])
    assert "layer1.0.conv2" in stem_group["members"]  # coupled by the residual add
    for png in ("score_distribution.png", "sorted_scores.png", "kept_channels.png"):
        assert Image.open(tmp_path / "r" / png).size[0] > 500


def test_rank_without_attention(tmp_path):
    path = tmp_path / "m.safetensors"
    artifact.save(
        path,
        models.build("resnet18", 3, "none"),
        ModelCard(
            arch="resnet18",
            num_classes=3,
            classes=list("abc"),
            preprocessing=models.preprocessing("resnet18", 64),
        ),  # fmt: skip
    )
    with pytest.raises(SlimfgError, match="--importance magnitude"):
        rank(str(path))
    result = CliRunner().invoke(main, ["rank", str(path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
