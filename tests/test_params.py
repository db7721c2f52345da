"""params.yaml is checked against one schema before any work; errors name key, value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from petseg.errors import ParamsError
from petseg.params import load_params, validate
from tests.paramsfile import REPO, default_params, with_overrides, write_params

STAGE_SCRIPTS = sorted(p.name for p in (REPO / "stages").glob("[a-z]*.py"))
STAGE_ARGS = {"train.py": ["unet"]}


def test_the_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.image_size % 32 == 0 and params.train.augment.hflip == 0.5


def test_every_config_preset_is_valid():
    # a preset may leave out a model's section: it takes that section's defaults (tests/test_registry.py)
    presets = sorted((REPO / "configs").glob("*.yaml"))
    for preset in presets:
        load_params(preset)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.lr", 0.0, "train.lr = 0.0 is invalid; allowed: a number > 0.0"),
        ("train.lr", -1e-3, "train.lr = -0.001"),
        ("train.lr", "fast", "train.lr = 'fast'"),
        ("train.epochs", 0, "train.epochs = 0 is invalid; allowed: an integer >= 1"),
        ("train.epochs", 2.5, "train.epochs = 2.5"),
        ("train.epochs", True, "train.epochs = True"),
        (
            "data.image_size",
            100,
            "data.image_size = 100 is invalid; allowed: an integer >= 32 <= 2048 and a multiple of 32",
        ),
        ("data.source", "imagenet", "allowed: one of synthetic, oxford-iiit-pet"),
        ("infer.model", "segformer", "infer.model = 'segformer' is invalid; allowed: one of unet, resnet34_unet"),
        ("train.loss", "focal", "allowed: one of bce, dice, bce+dice"),
        ("train.ema", 1.0, "train.ema = 1.0 is invalid; allowed: a number >= 0.0 and < 1.0"),
        ("train.optimizer", "sgd", "allowed: one of adam, adamw"),
        ("train.scheduler", "step", "allowed: one of none, plateau, cosine, onecycle"),
        ("evaluate.threshold", 1.0, "evaluate.threshold = 1.0 is invalid; allowed: a number > 0.0 and < 1.0"),
        ("evaluate.threshold", 0, "evaluate.threshold = 0"),
        ("models.resnet34_unet.encoder_weights", "imagenet21k", "allowed: one of null, imagenet"),
        ("train.augment.hflip", 1.5, "train.augment.hflip = 1.5"),
        ("data.images_md5", "abc", "an md5 hex digest"),
        ("train.device", "tpu", "auto, cpu, mps, cuda or cuda:N"),
        ("data.split_fractions", [0.5, 0.5], "data.split_fractions"),
        ("data.split_fractions", [0.5, 0.3, 0.3], "must sum to 1"),
        ("train", 3, "train must be a mapping"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(key, value, message):
    with pytest.raises(ParamsError) as info:
        validate(with_overrides(default_params(), {key: value}))
    assert message in str(info.value)


def test_unknown_key_is_reported_with_a_suggestion():
    params = default_params()
    params["train"]["learnig_rate"] = 0.1
    with pytest.raises(
        ParamsError, match=r"unknown key train\.learnig_rate.*known keys here: train\.epochs, train\.lr"
    ):
        validate(params)
    params = default_params()
    params["train"]["lrr"] = 0.1
    with pytest.raises(ParamsError, match=r"did you mean train\.lr\?"):
        validate(params)


def test_missing_key_is_reported():
    params = default_params()
    del params["evaluate"]["tta"]
    with pytest.raises(ParamsError, match=r"missing key evaluate\.tta \(true or false\)"):
        validate(params)


def test_batch_size_must_split_evenly_across_processes():
    params = with_overrides(
        default_params(),
        {"train.nproc_per_node": 3, "models.unet.batch_size": 16, "models.resnet34_unet.batch_size": 15},
    )
    with pytest.raises(ParamsError, match=r"models\.unet\.batch_size = 16 .* divisible by train\.nproc_per_node = 3"):
        validate(params)


def test_numbers_read_as_yaml_1_2_like_dvc_does(tmp_path: Path):
    text = (REPO / "params.yaml").read_text().replace("lr: 0.003", "lr: 3e-4")
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.lr == 3e-4


def test_unreadable_params_files_name_the_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="nothere.yaml: file not found"):
        load_params(tmp_path / "nothere.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="broken.yaml: not valid YAML"):
        load_params(broken)


def test_one_yaml_reader_and_its_errors_name_the_source():
    from petseg.errors import DataError
    from petseg.io import parse_yaml

    # YAML 1.2 as DVC reads it: "yes" stays a string, 3e-4 is a float
    assert parse_yaml("a: yes\nb: 3e-4\n", "x.yaml") == {"a": "yes", "b": 3e-4}
    with pytest.raises(DataError, match=r"^dvc\.lock at exp-1: not valid YAML: [^\n]+$"):
        parse_yaml("stages: [unclosed\n", "dvc.lock at exp-1")
    # every other module reads YAML through it (benchmarks edit params files round-trip, keeping comments)
    readers = [
        str(path.relative_to(REPO))
        for folder in ("petseg", "stages")
        for path in sorted((REPO / folder).rglob("*.py"))
        if "YAML(" in path.read_text()
    ]
    assert readers == ["petseg/io.py"]


@pytest.mark.parametrize("script", STAGE_SCRIPTS)
def test_every_stage_refuses_bad_params_before_any_work(script: str, tmp_path: Path):
    params = write_params(tmp_path / "params.yaml", {"train.lr": -1.0})
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        [sys.executable, str(REPO / "stages" / script), *STAGE_ARGS.get(script, []), "--params", str(params)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "train.lr = -1.0 is invalid" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_stage_params_accept_dvc_style_overrides(tmp_path: Path):
    # what `dvc exp run -S train.lr=3e-4` writes back into params.yaml must still validate
    params = default_params()
    params["train"]["lr"] = 3e-4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_params(tmp_path / "params.yaml").train.lr == 3e-4


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"models.resnet34_unet.batch_size": 1}, "models.resnet34_unet.batch_size = 1 is invalid; batch norm needs"),
        ({"models.unet.batch_size": 1}, r"models.unet.batch_size = 1 is invalid; .*\(allowed: 2 or more\)"),
        (
            {"train.nproc_per_node": 2, "models.unet.batch_size": 2, "models.resnet34_unet.batch_size": 4},
            r"models.unet.batch_size = 2 is invalid; with train.nproc_per_node = 2 each process trains on 1 image; "
            r".*\(allowed: a multiple of 2, at least 4\)",
        ),
    ],
)
def test_a_batch_of_one_image_per_process_is_refused(overrides, message):
    with pytest.raises(ParamsError, match=message):
        validate(with_overrides(default_params(), overrides))


def test_two_images_per_process_are_accepted():
    params = validate(
        with_overrides(
            default_params(),
            {"train.nproc_per_node": 2, "models.unet.batch_size": 4, "models.resnet34_unet.batch_size": 4},
        )
    )
    assert params.models.unet.batch_size == 4


def test_every_model_trains_at_the_smallest_image_size_and_batch_the_schema_accepts():
    import torch

    from petseg.models import MODELS, build_model
    from petseg.params import MIN_BATCH_PER_PROCESS, DataParams, _rule, as_dict

    size_rule = _rule(get_type_hints(DataParams, include_extras=True)["image_size"])
    smallest = size_rule.min
    with pytest.raises(ParamsError, match="data.image_size"):
        validate(with_overrides(default_params(), {"data.image_size": smallest - size_rule.multiple_of}))
    for name, info in MODELS.items():
        multiple = info.load_class().size_multiple
        assert smallest % multiple == 0 and size_rule.multiple_of % multiple == 0, name  # every accepted size fits
        torch.manual_seed(0)
        model = build_model(name, **as_dict(load_params(REPO / "params.yaml").models.section(name))).train()
        images = torch.rand(MIN_BATCH_PER_PROCESS, 3, smallest, smallest)
        model(images).mean().backward()  # batch norm in training mode takes it
        if smallest == multiple:  # the deepest maps are 1 x 1: a batch of one is what the schema refuses
            with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
                model(images[:1])
