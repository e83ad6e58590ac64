"""Bad input: one line on stderr, nonzero exit, no traceback, nothing written."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from safetensors.torch import save_file

from slimfg import artifact, models
from slimfg.card import ModelCard
from slimfg.cli import main
from slimfg.config import DEFAULT_LR
from tests.conftest import write_bomb_png

FAST = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--workers",
    "0",
]


def run(args):
    return CliRunner().invoke(main, args)


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def _bad_inputs(tmp_path, tiny_data):
    """(name, argv, expected fragment) for each bad input of the core issue."""
    one_class = tmp_path / "one"
    for split in ("train", "val"):
        src = sorted((tiny_data / split).iterdir())[0]
        (one_class / split / src.name).mkdir(parents=True)
        for f in src.glob("*.jpg"):
            (one_class / split / src.name / f.name).write_bytes(f.read_bytes())
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    wrong = tmp_path / "r34.safetensors"
    save_file(models.build("resnet34", 3, "none").state_dict(), wrong)
    return [
        ("missing-dir", [str(tmp_path / "nope")], "data directory not found"),
        ("corrupt-jpeg-as-data", [str(corrupt)], "must be a directory"),
        ("non-image-as-data", [str(text)], "must be a directory"),
        ("one-class", [str(one_class)], "at least 2 class"),
        ("unknown-arch", [str(tiny_data), "--arch", "resnet19"], "did you mean"),
        ("wrong-weights", [str(tiny_data), "--weights", str(wrong)], "do not match arch 'resnet18'"),
        ("bad-schedule", [str(tiny_data), "--schedule", "fz"], "phase letters"),
    ]


@pytest.mark.parametrize(
    "case",
    [
        "missing-dir",
        "corrupt-jpeg-as-data",
        "non-image-as-data",
        "one-class",
        "unknown-arch",
        "wrong-weights",
        "bad-schedule",
    ],
)
def test_train_bad_input(tmp_path, tiny_data, case):
    cases = {name: (argv, frag) for name, argv, frag in _bad_inputs(tmp_path, tiny_data)}
    argv, fragment = cases[case]
    out = tmp_path / "run"
    # options after DATA so that --arch in a case overrides FAST
    result = run(["train", argv[0], "--out", str(out), *FAST, *argv[1:]])
    assert_one_line_error(result, fragment)
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint.safetensors").exists()


def test_eval_artifact_of_another_arch(tmp_path, tiny_data):
    model = models.build("resnet18", 3, "none")
    path = tmp_path / "m.safetensors"
    artifact.write(path, model.state_dict(), {"format": "slimfg", "arch": "resnet34", "num_classes": 3})
    assert_one_line_error(run(["eval", str(path), str(tiny_data)]), "does not match its arch")


def test_eval_non_slimfg_file(tmp_path, tiny_data):
    (tmp_path / "x.safetensors").write_text("not a model")
    assert_one_line_error(run(["eval", str(tmp_path / "x.safetensors"), str(tiny_data)]), "not a slimfg")


def test_recipe_defaults_and_flag_override(tmp_path, tiny_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("schedule: ff\nimage-size: 40\nlr: f=0.01\n")
    result = run(
        [
            "train",
            str(tiny_data),
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "run"),
            *FAST,
            "--schedule",
            "f",
        ]
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["schedule"] == "f"  # flag wins
    assert cfg["lr"]["f"] == 0.01 and cfg["lr"]["a"] == DEFAULT_LR["a"]  # recipe value, default for the rest
    assert cfg["image_size"] == 32  # FAST passes --image-size 32 explicitly, over the recipe's 40


def test_recipe_unknown_key(tmp_path, tiny_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("shedule: ff\n")
    assert_one_line_error(
        run(["train", str(tiny_data), "--recipe", str(recipe), "--out", "x"]), "did you mean"
    )


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "slimfg", "train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: data directory not found: {tmp_path / 'nope'}"]


def test_help_documents_every_option():
    result = run(["train", "--help"])
    for option in ("--schedule", "--attention", "--lr", "--reg", "--resume", "--recipe", "--val-split"):
        assert option in result.output


def test_prune_and_export_take_recipes(tmp_path, tiny_data):
    """Recipe keys are option names on prune and export too; flags win; unknown keys are a
    one-line error naming the closest option."""
    from slimfg.pruning.graph import count, example_input

    model = tmp_path / "m.safetensors"
    card = ModelCard(arch="resnet18", num_classes=3, classes=list("abc"),
                     preprocessing=models.preprocessing("resnet18", 32))  # fmt: skip
    artifact.save(model, models.build("resnet18", 3, "none"), card)
    recipe = tmp_path / "prune.yaml"
    recipe.write_text("keep: 0.25\nimportance: magnitude\nround-to: 0\nlatency: false\nglobal: false\n")
    out = tmp_path / "p.safetensors"
    result = run(["prune", str(model), "--recipe", str(recipe), "--out", str(out), "--keep", "0.5"])
    assert result.exit_code == 0, result.output
    pruning = artifact.read_card(out).pruning
    assert pruning["keep"] == 0.5 and pruning["importance"] == "magnitude" and pruning["round_to"] is None
    assert "latency_b1_s" not in pruning["report"]["after"]
    recipe.write_text("format: onnx\nverify-images: 4\n")
    result = run(["export", str(out), "--recipe", str(recipe), "--out", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    assert "on 4 real images" in result.output
    recipe.write_text("kep: 0.5\n")
    assert_one_line_error(run(["prune", str(model), "--recipe", str(recipe), "--out", str(out)]), "'keep'")
    pruned, _ = artifact.load(out)
    assert count(pruned, example_input(32))["params"] < 0.4 * 11_200_000


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["prune", "m.safetensors", "--out", "p.safetensors", "--keep", "1.5"], "--keep"),
        (["rank", "m.safetensors", "--keep", "0"], "--keep"),
        (["train", "data", "--out", "r", "--crop-scale", "0"], "--crop-scale"),
        (["export", "m.safetensors", "--batch", "8,4,2"], "--batch"),
    ],
)
def test_bad_option_values_are_one_line_errors(tmp_path, args, fragment):
    result = run(args)
    assert_one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_train_skips_a_decompression_bomb(tmp_path, tiny_data, caplog):
    cls = sorted((tiny_data / "train").iterdir())[0]
    write_bomb_png(cls / "bomb.png")
    out = tmp_path / "run"
    result = run(["train", str(tiny_data), "--out", str(out), *FAST, "--schedule", "f"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable file" in caplog.text and "Traceback" not in result.output
    assert (out / "model.safetensors").is_file()


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    run_dir = tmp_path / "flowers"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")  # what every training run folder holds
    (run_dir / "model.safetensors").write_bytes(b"a real run")
    assert_one_line_error(run(["demo", "--out", str(run_dir)]), "not an earlier demo's folder")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert (run_dir / "model.safetensors").read_bytes() == b"a real run"


def test_demo_folder_is_reused_only_when_the_demo_made_it(tmp_path):
    from slimfg.pipeline import DEMO_MARK, demo_folder

    run_dir = demo_folder(tmp_path / "demo")  # new: made and marked
    (run_dir / "model.safetensors").write_bytes(b"old demo output")
    assert demo_folder(run_dir) == run_dir
    assert sorted(p.name for p in run_dir.iterdir()) == [DEMO_MARK]  # emptied: all of it was the demo's
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (demo_folder(empty) / DEMO_MARK).is_file()
