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
from slimfg.pruning.graph import example_input
from slimfg.pruning.pruner import check_prunable

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


# One torchvision model per family (the five among them) and every timm family:
# what `make test` runs (marked breadth_ci). The whole list (-m breadth) takes about
# 20 minutes on 2 cores, too long for the 30-minute CI next to the rest; `make
# test-breadth` runs it, and benchmarks/support.py writes the support table from it.
CI_TORCHVISION = [
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
    "inception_v3", "maxvit_t", "mnasnet1_0", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
    "regnet_y_400mf", "resnet18", "resnext50_32x4d", "shufflenet_v2_x1_0", "squeezenet1_1", "swin_t",
    "swin_v2_t", "vgg11_bn", "vit_b_32", "wide_resnet50_2",
]  # fmt: skip
CI_MODELS = set(CI_TORCHVISION) | set(support.TIMM.values())


def _params(models: list[str]) -> list:
    ci = pytest.mark.breadth_ci
    return [
        pytest.param(a, marks=[pytest.mark.breadth, ci] if a in CI_MODELS else [pytest.mark.breadth])
        for a in models
    ]


def test_the_ci_subset_covers_every_torchvision_family():
    every = support.torchvision_models()
    assert set(CI_TORCHVISION) <= set(every)
    assert {support.family(a) for a in every} == {support.family(a) for a in CI_TORCHVISION}
    assert {"googlenet", "inception_v3", "shufflenet_v2_x1_0", "mnasnet1_0", "convnext_tiny"} <= CI_MODELS


@pytest.mark.parametrize("arch", _params(support.torchvision_models() + list(support.TIMM.values())))
def test_support_contract(arch, tmp_path):
    row = support.contract(arch, tmp_path)
    if row["status"] == "refused":
        assert row["reason"].startswith(f"{arch} is not supported: ") and "\n" not in row["reason"]
        with pytest.raises(SlimfgError):  # by name or layer when built, else by the trial prune
            size = support.SIZE.get(arch, support.DEFAULT_SIZE)
            check_prunable(models.build(arch, 3, "none"), example_input(size), arch)
    else:
        assert row["status"] == "pass", row
