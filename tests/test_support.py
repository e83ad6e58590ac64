"""The support contract (issue 15): every torchvision classification model and the timm
families of benchmarks/support.py go through slimfg end to end, or are refused up front
with one line."""

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimfg import models
from slimfg.cli import main
from slimfg.errors import SlimfgError

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import support  # noqa: E402


def test_unprunable_layer_is_refused_in_one_line_before_any_work(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", str(tiny_data), "--arch", "timm:mixnet_s", "--weights", "none", "--out", str(out)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "timm:mixnet_s is not supported: its layer" in lines[0], result.stderr
    assert not out.exists()


def test_conv_classifier_is_the_head():
    """timm's ResNetV2 classifies with a 1x1 conv: it is the head (replaced, never pruned,
    no attention), not a missing Linear."""
    model = models.build("timm:resnetv2_50", 7, "none")
    name = models.classifier_name(model)
    assert model.get_submodule(name) is model.get_classifier() and model.get_classifier().out_channels == 7


@pytest.mark.breadth  # `make test` runs these as a second pytest on 2 workers (-m breadth -n 2)
@pytest.mark.parametrize("arch", support.torchvision_models() + list(support.TIMM.values()))
def test_support_contract(arch, tmp_path):
    row = support.contract(arch, tmp_path)
    if row["status"] == "refused":
        assert row["reason"].startswith(f"{arch} is not supported: ") and "\n" not in row["reason"]
        with pytest.raises(SlimfgError):
            models.build(arch, 3, "none")
    else:
        assert row["status"] == "pass", row
