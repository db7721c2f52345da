"""One statement per fact: every fact stated twice is checked here against its other statement.

Each check is a function that lists the disagreements; each test runs it on the
project as it is (nothing to report) and on a copy with one side changed alone
(the change is reported). The slow test at the end adds a third model the way
ARCHITECTURE.md says and runs the whole pipeline with it.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from petseg import params as schema
from petseg.checkpoint import Checkpoint, save_checkpoint
from petseg.data.cache import load_split
from petseg.evaluation import run as evaluation_run
from petseg.evaluation.scoring import evaluate_checkpoint
from petseg.losses import LOSSES
from petseg.models import MODELS, TRAINING_KEYS, build_model
from petseg.models.nets.unet import UNet
from petseg.training.optim import EXTENSIBLE_SCHEDULERS, OPTIMIZERS, make_scheduler
from tests.cachemaker import write_cache
from tests.paramsfile import REPO, evaluate_params
from tests.projectcopy import GIT_USER, reproduced_project, run, stages_run

# ------------------------------------------------ a model's params section and its constructor


def section_mismatches(section: type, model_class: type) -> list[str]:
    """How a params dataclass disagrees with the constructor it configures (names, defaults)."""
    found = []
    fields = {f.name: f for f in dataclasses.fields(section)}
    constructor = dict(inspect.signature(model_class.__init__).parameters)
    constructor.pop("self")
    for key in TRAINING_KEYS - set(fields):
        found.append(f"{section.__name__} lacks the training key {key}")
    for name, field in fields.items():
        if field.default is dataclasses.MISSING:
            found.append(f"{section.__name__}.{name} has no default")
        if name in TRAINING_KEYS:
            continue
        if name not in constructor:
            found.append(f"{section.__name__}.{name} is not an argument of {model_class.__name__}")
        elif constructor[name].default != field.default:
            found.append(
                f"{section.__name__}.{name} defaults to {field.default!r}, "
                f"{model_class.__name__} to {constructor[name].default!r}"
            )
    for name, parameter in constructor.items():
        if name not in fields and parameter.default is inspect.Parameter.empty:
            found.append(f"{model_class.__name__}({name}) has no default and no key in {section.__name__}")
    return found


@pytest.mark.parametrize("name", list(MODELS))
def test_each_params_section_matches_its_constructor(name: str):
    info = MODELS[name]
    section = get_type_hints(schema.ModelsParams)[name]
    assert section.__name__ == info.section
    assert section_mismatches(section, info.load_class()) == []


def test_section_check_reports_a_change_on_either_side():
    unet_section = schema.UNetParams
    assert section_mismatches(unet_section, UNet) == []
    changed_default = dataclasses.make_dataclass(
        "UNetParams", [("base_channels", int, 32), ("batch_size", int, 16)], frozen=True
    )
    assert section_mismatches(changed_default, UNet) == ["UNetParams.base_channels defaults to 32, UNet to 64"]
    renamed = dataclasses.make_dataclass("UNetParams", [("width", int, 64), ("batch_size", int, 16)], frozen=True)
    assert section_mismatches(renamed, UNet) == ["UNetParams.width is not an argument of UNet"]

    class Deeper(UNet):
        def __init__(self, base_channels: int = 64, depth: int | None = None, levels: int = 4):
            super().__init__(base_channels)

    class Required(UNet):
        def __init__(self, base_channels: int = 64, *, depth: int):
            super().__init__(base_channels)

    assert section_mismatches(unet_section, Deeper) == []  # new constructor options with defaults are fine
    assert section_mismatches(unet_section, Required) == ["Required(depth) has no default and no key in UNetParams"]


def test_a_missing_section_or_key_takes_the_defaults_of_the_constructor():
    """A params file (e.g. a preset in configs/) without a model's section validates with that section's defaults."""
    for preset in sorted((REPO / "configs").glob("*.yaml")):
        raw = schema.read_yaml(preset)
        schema.validate(raw)
        for name, info in MODELS.items():
            raw["models"].pop(name, None)  # a preset may lack a model's section already
            defaults = schema.validate(raw).models.section(name)
            architecture = {k: v for k, v in dataclasses.asdict(defaults).items() if k not in TRAINING_KEYS}
            built = build_model(name, **architecture)
            assert type(built) is info.load_class()
    raw = schema.read_yaml(REPO / "params.yaml")
    del raw["models"]["unet"]["base_channels"]
    assert (
        schema.validate(raw).models.unet.base_channels
        == 64
        == inspect.signature(UNet).parameters["base_channels"].default
    )
    del raw["train"]["lr"]
    with pytest.raises(schema.ParamsError, match=r"missing key train\.lr"):  # other sections have no defaults
        schema.validate(raw)


# ------------------------------------------------ the params Literals and what exists


def literal_values(field: str) -> tuple[str, ...]:
    hint = get_type_hints(schema.TrainParams)[field]
    assert getattr(hint, "__origin__", None) is Literal
    return get_args(hint)


def choice_mismatches(param: str, allowed: tuple[str, ...], existing: Any) -> list[str]:
    return [f"{param}: {name!r} is allowed but does not exist" for name in allowed if name not in existing] + [
        f"{param}: {name!r} exists but is not allowed" for name in existing if name not in allowed
    ]


def scheduler_mismatches(allowed: tuple[str, ...]) -> list[str]:
    """Each allowed train.scheduler must build its own scheduler ("none": no scheduler)."""
    found, kinds = [], {}
    for name in allowed:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, _ = make_scheduler(name, optimizer, 0.1, epochs=4, steps=4)
        if (scheduler is None) != (name == "none"):
            found.append(f"train.scheduler: {name!r} builds {type(scheduler).__name__}")
        kinds.setdefault(type(scheduler), []).append(name)
    found += [f"train.scheduler: {names} build the same scheduler" for names in kinds.values() if len(names) > 1]
    found += [
        f"EXTENSIBLE_SCHEDULERS: {name!r} is not allowed" for name in EXTENSIBLE_SCHEDULERS if name not in allowed
    ]
    return found


def test_loss_optimizer_and_scheduler_literals_match_what_exists():
    assert choice_mismatches("train.loss", literal_values("loss"), LOSSES) == []
    assert choice_mismatches("train.optimizer", literal_values("optimizer"), OPTIMIZERS) == []
    assert scheduler_mismatches(literal_values("scheduler")) == []


def test_literal_checks_report_a_change_on_either_side():
    losses = literal_values("loss")
    assert choice_mismatches("train.loss", (*losses, "focal"), LOSSES) == [
        "train.loss: 'focal' is allowed but does not exist"
    ]
    assert choice_mismatches("train.loss", losses, {**LOSSES, "lovasz": LOSSES["dice"]}) == [
        "train.loss: 'lovasz' exists but is not allowed"
    ]
    assert choice_mismatches("train.optimizer", ("adam",), OPTIMIZERS) == [
        "train.optimizer: 'adamw' exists but is not allowed"
    ]
    schedulers = literal_values("scheduler")
    assert scheduler_mismatches((*schedulers, "step")) == [
        "train.scheduler: 'step' builds NoneType",
        "train.scheduler: ['none', 'step'] build the same scheduler",
    ]
    assert scheduler_mismatches(tuple(s for s in schedulers if s != "plateau")) == [
        "EXTENSIBLE_SCHEDULERS: 'plateau' is not allowed"
    ]


# ------------------------------------------------ METRIC_KEYS and the summary


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The summary of a real (untrained) checkpoint on a real tiny test cache."""
    root = tmp_path_factory.mktemp("summary")
    cache = write_cache(root / "cache", {"train": 2, "val": 2, "test": 4}, image_size=32)
    model = build_model("unet", base_channels=2)
    checkpoint = Checkpoint("unet", {"base_channels": 2}, model.state_dict(), image_size=32, epoch=1)
    save_checkpoint(root / "best.pt", checkpoint)
    split = load_split(cache, "test")
    return evaluate_checkpoint(root / "best.pt", split, evaluate_params(), "cpu", epoch_seconds=[1.0]).summary


def test_metric_keys_are_the_summary_keys(summary: dict[str, Any]):
    assert list(evaluation_run.metrics_record(summary)) == list(evaluation_run.METRIC_KEYS)


def test_metric_keys_check_reports_a_change_on_either_side(summary: dict[str, Any], monkeypatch):
    with pytest.raises(ValueError, match=r"missing \['gflops'\], not in METRIC_KEYS \[\]"):
        evaluation_run.metrics_record({k: v for k, v in summary.items() if k != "gflops"})
    with pytest.raises(ValueError, match=r"missing \[\], not in METRIC_KEYS \['dice_p90'\]"):
        evaluation_run.metrics_record({**summary, "dice_p90": 0.5})
    monkeypatch.setattr(evaluation_run, "METRIC_KEYS", (*evaluation_run.METRIC_KEYS, "iou_median"))
    with pytest.raises(ValueError, match=r"missing \['iou_median'\]"):
        evaluation_run.metrics_record(summary)


# ------------------------------------------------ the registry's train stages and dvc.yaml


def train_stage_mismatches(models: dict[str, Any], stages: dict[str, Any]) -> list[str]:
    """How dvc.yaml's train stages disagree with the registry."""
    found = []
    for name, info in models.items():
        stage = stages.get(info.train_stage)
        if stage is None:
            found.append(f"{name}: dvc.yaml has no stage {info.train_stage}")
            continue
        if stage.get("cmd") != f"python -m stages.train {name}":
            found.append(f"{info.train_stage}: cmd {stage.get('cmd')!r} does not train {name}")
        if f"models.{name}" not in stage.get("params", []):
            found.append(f"{info.train_stage}: params lack models.{name}")
        outs = [next(iter(out)) if isinstance(out, dict) else out for out in stage.get("outs", [])]
        for path in (f"models/{name}/best.pt", f"models/{name}/last.pt", f"dvclive/{name}/plots"):
            if path not in outs:
                found.append(f"{info.train_stage}: outs lack {path}")
    trained = {info.train_stage for info in models.values()}
    for stage_name, stage in stages.items():
        if str(stage.get("cmd", "")).startswith("python -m stages.train") and stage_name not in trained:
            found.append(f"{stage_name}: trains a model that is not registered (or under another stage name)")
    return found


def dvc_stages() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_registry_train_stages_are_the_dvc_yaml_train_stages():
    assert train_stage_mismatches(MODELS, dvc_stages()) == []


def test_train_stage_check_reports_a_change_on_either_side():
    stages = dvc_stages()
    renamed = copy.deepcopy(stages)
    renamed["train_resnet34"] = renamed.pop("train_resnet")
    assert train_stage_mismatches(MODELS, renamed) == [
        "resnet34_unet: dvc.yaml has no stage train_resnet",
        "train_resnet34: trains a model that is not registered (or under another stage name)",
    ]
    edited = copy.deepcopy(stages)
    edited["train_resnet"]["params"] = ["train", "models.unet"]
    assert train_stage_mismatches(MODELS, edited) == ["train_resnet: params lack models.resnet34_unet"]
    registry = dict(MODELS)
    registry["unet"] = dataclasses.replace(MODELS["unet"], train_stage="train_plain_unet")
    assert "unet: dvc.yaml has no stage train_plain_unet" in train_stage_mismatches(registry, stages)


# ------------------------------------------------ the import graph


def import_graph(root: Path = REPO / "petseg") -> dict[str, set[str]]:
    """Which first-level parts of petseg (a subpackage or a module) import which others, anywhere in a file."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        source = parts[0] if parts[0] != "__init__" else "petseg"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" if node.module == "petseg" else node.module for a in node.names]
            else:
                continue
            for name in names:
                target = name.split(".")[1] if name.startswith("petseg.") else None
                if target is not None and target != source:
                    graph.setdefault(source, set()).add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected group of more than one part (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_packages_depend_one_way():
    graph = import_graph()
    assert "plotting" not in graph["evaluation"]  # evaluation computes; plotting draws
    assert "evaluation" in graph["plotting"]  # (the import graph is read: the plot stage reads the tables)
    assert cycles(graph) == []


def test_cycle_check_reports_an_import_back():
    graph = copy.deepcopy(import_graph())
    graph["evaluation"].add("plotting")
    assert ["evaluation", "plotting"] in cycles(graph)


# ------------------------------------------------ acceptance: a third model in the places ARCHITECTURE.md lists

SMALL = "unet_small"
SMALL_LABEL, SMALL_COLOUR = "UNet-small", "#2ca02c"
MODULE = '''"""A narrow UNet."""

from petseg.models.nets.unet import UNet


class UNetSmall(UNet):
    def __init__(self, base_channels: int = 4, in_channels: int = 3, out_channels: int = 1):
        super().__init__(base_channels, in_channels, out_channels)
'''
ENTRY = f'''        ModelInfo(
            "{SMALL}", "{SMALL_LABEL}", "{SMALL_COLOUR}", "^", "petseg.models.nets.{SMALL}", "UNetSmall",
            "UNetSmallParams", "train_{SMALL}"
        ),
'''
SECTION = """@dataclass(frozen=True)
class UNetSmallParams:
    base_channels: Annotated[int, Int(min=1, max=512)] = 4
    batch_size: Annotated[int, Int(min=1)] = 16


"""
TEST_SUBCLASS = f"""

class TestUNetSmall(ModelContract):
    name = "{SMALL}"
    small_params = {{"base_channels": 2}}
    full_params = {{"base_channels": 4}}
    expected_parameters = 122_093  # UNet(base_channels=4)
    size_multiple = 16
"""


def insert(path: Path, before: str, text: str) -> None:
    """Insert ``text`` before the first ``before`` in the file (the anchor must be there)."""
    content = path.read_text()
    assert before in content, (path, before)
    path.write_text(content.replace(before, text + before, 1))


def add_third_model(project: Path) -> None:
    """The steps of ARCHITECTURE.md's "A new model", and nothing else."""
    (project / "petseg" / "models" / "nets" / f"{SMALL}.py").write_text(MODULE)
    insert(project / "petseg" / "models" / "registry.py", "    )\n}\nMODEL_NAMES", ENTRY)
    insert(project / "petseg" / "params.py", "def _model_sections()", SECTION)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"][SMALL] = {"base_channels": 2, "batch_size": 4}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_yaml = (project / "dvc.yaml").read_text()
    resnet = dvc_yaml[dvc_yaml.index("  train_resnet:\n") : dvc_yaml.index("  evaluate:\n")]
    stage = resnet.replace("train_resnet:", f"train_{SMALL}:").replace("resnet34_unet", SMALL)
    (project / "dvc.yaml").write_text(dvc_yaml.replace(resnet, resnet + stage))
    with open(project / "tests" / "test_models.py", "a") as handle:
        handle.write(TEST_SUBCLASS)


def colour_pixels(path: Path, colour: str) -> int:
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return int(np.all(np.asarray(Image.open(path).convert("RGB")) == rgb, axis=-1).sum())


@pytest.mark.slow
def test_a_third_model_runs_through_the_whole_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """From the session's tiny project after its first run (tests/projectcopy.py), as a user adds a model."""
    project = reproduced_project(tmp_path_factory, "registry")[0]
    add_third_model(project)
    changed = run(project, "git", "status", "--porcelain").split("\n")
    assert sorted(line[3:] for line in changed if line) == sorted(
        [
            "dvc.yaml",
            "params.yaml",
            "petseg/models/registry.py",
            "petseg/params.py",
            "tests/test_models.py",
            f"petseg/models/nets/{SMALL}.py",
        ]
    )
    # its contract, the registry's checks and the registry's quick tests, in one process
    quick = ["-k", "UNetSmall or every_registered_model or not test_models", "-m", "not slow"]
    run(project, sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *quick,
        "tests/test_models.py", "tests/test_registry.py")  # fmt: skip
    run(project, "git", *GIT_USER, "add", "-A")
    run(project, "git", *GIT_USER, "commit", "-qm", "a third model")

    output = run(project, "dvc", "repro")
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    # all but the data stages: a new file in petseg/models/nets is code of every train stage too
    assert sorted(stages_run(output)) == sorted(set(stages) - {"download", "preprocess"})
    assert f"train_{SMALL}" in stages
    assert (project / "models" / SMALL / "best.pt").is_file()
    metrics = json.loads((project / "metrics" / f"{SMALL}.json").read_text())
    assert list(metrics) == list(evaluation_run.METRIC_KEYS) and metrics["n_images"] == 12
    assert metrics["parameters"] < json.loads((project / "metrics" / "unet.json").read_text())["parameters"]

    for chart in ("dice_curves", "loss_curves", "lr_curves", "dice_histogram", "dice_by_breed"):
        assert colour_pixels(project / "plots" / f"{chart}.png", SMALL_COLOUR) > 50, chart
    for table in (project / "plots" / "data").glob("*.csv"):
        assert f"{SMALL_LABEL},{SMALL_COLOUR}," in table.read_text(), table.name  # the charts' legend entries
    assert (project / "plots" / "gallery" / f"{SMALL}_worst.png").is_file()
    shown = json.loads(run(project, "dvc", "plots", "show", "--json"))["data"]
    charts = {name: plot for name, (plot,) in shown.items() if plot["type"] == "vega"}
    assert len(charts) == 6, list(shown)
    for name, plot in charts.items():  # each model's series labelled and coloured from its rows
        rows = plot["content"]["data"]["values"]
        assert {(row["model"], row["colour"]) for row in rows} == {
            *((info.label, info.colour) for info in MODELS.values()),
            (SMALL_LABEL, SMALL_COLOUR),
        }, name
        assert plot["content"]["encoding"]["color"]["scale"] == {"range": {"field": "colour"}}
    assert f"plots/gallery/{SMALL}_worst.png" in shown
    run(project, "dvc", "plots", "show", "-o", "plots_show")
    page = (project / "plots_show" / "index.html").read_text()
    assert SMALL_LABEL in page and SMALL_COLOUR in page and f"{SMALL}_worst.png" in page

    # the seed study's pictures (this run: one seed) draw it too, from the registry alone
    run(project, sys.executable, "-m", "stages.compare", "--experiments", "workspace", "--plots", "study")
    for picture in ("curves", "forest", "images"):
        assert colour_pixels(project / "study" / f"{picture}.png", SMALL_COLOUR) > 50, picture
    for data in ("curves_val_dice.csv", "curves_train_loss.csv", "forest.json", "images.csv"):
        assert SMALL_LABEL in (project / "study" / data).read_text(), data
    shutil.rmtree(project / "study")  # its dvc.yaml would join the project's plots

    assert stages_run(run(project, "dvc", "repro")) == []  # the folder deps leave nothing to do
    registry = project / "petseg" / "models" / "registry.py"
    registry.write_text(registry.read_text().replace(SMALL_COLOUR, "#9467bd"))
    assert stages_run(run(project, "dvc", "repro")) == ["plot"]  # a colour re-runs only the stage that draws

    compare = json.loads((project / "metrics" / "compare.json").read_text())
    assert f"{SMALL}_dice_mean" in compare and f"unet_minus_{SMALL}" in compare  # every model compared with UNet
