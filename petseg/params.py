"""The one schema of params.yaml: typed sections, validated once.

The frozen dataclasses below *are* the schema. :func:`load_params` reads the
file with ruamel.yaml (DVC's own YAML library, so ``1e-3`` is a number exactly
as DVC reads it), checks every key against the field's rule and returns a
:class:`Params` of typed values. Every stage validates the whole file before
doing any work, so a typo such as ``train.learnig_rate`` or ``lr: -1`` stops
the pipeline at once with one line naming the key, the value and what is
allowed. Library code never reads params.yaml and never re-checks a value: it
receives these objects and trusts them.

A field's rule comes from its type: ``Literal[...]`` (a fixed set of values),
``bool``, a nested section, or ``Annotated[type, rule]`` with one of the rules
of :mod:`petseg.schema`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from petseg import io
from petseg.errors import DataError, ParamsError
from petseg.models.registry import MODEL_NAMES, MODELS
from petseg.schema import URL, Bool, Choice, Float, Int, ListOf, OneOrMore, Rule, Str

PROBABILITY = Float(ge=0.0, le=1.0)
JITTER = Float(ge=0.0, lt=1.0)
MD5 = Str(r"[0-9a-fA-F]{32}", "an md5 hex digest (32 hex digits)")
DEVICE = Str(r"auto|cpu|mps|cuda(:[0-9]+)?", "auto, cpu, mps, cuda or cuda:N")
THRESHOLD = Float(gt=0.0, lt=1.0)
POSTPROCESS = ("none", "largest")  # petseg.postprocess: what is done to a thresholded mask
# batch norm needs two values per channel in training; the deepest feature maps of the models are 1 x 1
# at the smallest data.image_size (32), so each process's batch must hold two images
MIN_BATCH_PER_PROCESS = 2


@dataclass(frozen=True)
class SyntheticParams:
    n_trainval: Annotated[int, Int(min=2)]
    n_test: Annotated[int, Int(min=1)]


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "oxford-iiit-pet"]
    images_url: Annotated[tuple[str, ...], OneOrMore(URL)]  # mirrors, tried in order
    annotations_url: Annotated[tuple[str, ...], OneOrMore(URL)]
    images_md5: Annotated[str, MD5]
    annotations_md5: Annotated[str, MD5]
    image_size: Annotated[int, Int(min=32, max=2048, multiple_of=32)]
    split: Literal["official", "random"]
    split_fractions: Annotated[tuple[float, float, float], ListOf(Float(gt=0.0, lt=1.0), length=3)]
    val_every: Annotated[int, Int(min=2)]
    seed: Annotated[int, Int(min=0)]
    synthetic: SyntheticParams


@dataclass(frozen=True)
class PreprocessParams:
    workers: Annotated[int, Int(min=0)]
    jpeg_draft: bool


@dataclass(frozen=True)
class AugmentParams:
    hflip: Annotated[float, PROBABILITY]  # probability per image
    vflip: Annotated[float, PROBABILITY]
    rotate: Annotated[float, Float(ge=0.0, le=45.0)]  # largest rotation, degrees either way
    scale: Annotated[float, JITTER]  # zoom factor drawn from [1-x, 1+x]
    brightness: Annotated[float, JITTER]  # colour jitter strengths: factor drawn from [1-x, 1+x]
    contrast: Annotated[float, JITTER]
    saturation: Annotated[float, JITTER]


@dataclass(frozen=True)
class TrainParams:
    epochs: Annotated[int, Int(min=1)]
    lr: Annotated[float, Float(gt=0.0, lt=10.0)]
    weight_decay: Annotated[float, Float(ge=0.0)]
    seed: Annotated[int, Int(min=0)]
    loss: Literal["bce", "dice", "bce+dice"]
    optimizer: Literal["adam", "adamw"]
    scheduler: Literal["none", "plateau", "cosine", "onecycle"]
    augment: AugmentParams
    device: Annotated[str, DEVICE]
    precision: Literal["auto", "fp32", "bf16", "fp16"]  # petseg.precision: auto picks per device
    compile: Annotated[bool | str, Choice("auto", True, False)]  # torch.compile; auto: see compile_auto
    nproc_per_node: Annotated[int, Int(min=1)]
    # decay of the weights' moving average (petseg.training.ema), validated and saved; 0: off. It serves long runs
    # (thousands of steps), whose noisy end an average smooths; the recipe study found no gain in 270-step runs
    ema: Annotated[float, Float(ge=0.0, lt=1.0)] = 0.0


# One section per model of the registry (petseg.models.registry names its dataclass): its
# architecture options, named and defaulted exactly as its class's constructor, plus batch_size.
# A params file without a model's section, or without one of its keys, takes these defaults.


@dataclass(frozen=True)
class UNetParams:  # found by name: the registry's ModelInfo.section
    base_channels: Annotated[int, Int(min=1, max=512)] = 64
    batch_size: Annotated[int, Int(min=1)] = 16


@dataclass(frozen=True)
class ResNet34UNetParams:  # found by name: the registry's ModelInfo.section
    encoder_weights: Literal["imagenet"] | None = None
    batch_size: Annotated[int, Int(min=1)] = 32


def _model_sections() -> type:
    """``ModelsParams``: a field per registered model, named alike, typed by its section's dataclass."""
    fields = []
    for info in MODELS.values():
        section = globals().get(info.section)
        if not dataclasses.is_dataclass(section):  # a registry entry without its section: a schema bug
            raise TypeError(f"petseg.params has no dataclass {info.section} for models.{info.name} (see the registry)")
        fields.append((info.name, section, dataclasses.field(default_factory=section)))
    return dataclasses.make_dataclass(
        "ModelsParams",
        fields,
        frozen=True,
        namespace={"section": lambda self, model_name: getattr(self, model_name), "__module__": __name__},
    )


ModelsParams = _model_sections()


@dataclass(frozen=True)
class EvaluateParams:
    threshold: Annotated[float, THRESHOLD]
    tta: bool
    n_worst: Annotated[int, Int(min=0, max=64)]
    batch_size: Annotated[int, Int(min=1)]
    postprocess: Annotated[str, Choice(*POSTPROCESS)] = "none"


@dataclass(frozen=True)
class InferParams:
    model: Annotated[str, Choice(*MODEL_NAMES)]
    input_dir: Annotated[str | None, Str().or_null()]
    threshold: Annotated[float, THRESHOLD]
    tta: bool
    postprocess: Annotated[str, Choice(*POSTPROCESS)] = "none"


@dataclass(frozen=True)
class Params:
    data: DataParams
    preprocess: PreprocessParams
    train: TrainParams
    models: ModelsParams
    evaluate: EvaluateParams
    infer: InferParams


# ------------------------------------------------------------------ validation


def _rule(hint: Any) -> Rule | type:
    """The rule a field's type stands for, or the section's dataclass."""
    if dataclasses.is_dataclass(hint):
        return hint
    if get_origin(hint) is Annotated:
        return next(extra for extra in get_args(hint)[1:] if isinstance(extra, Rule))
    if hint is bool:
        return Bool()
    if get_origin(hint) is Literal:
        return Choice(*get_args(hint))
    options = get_args(hint)
    if get_origin(hint) is Union or type(hint).__name__ == "UnionType":  # Literal[...] | None
        choices = [value for option in options if option is not type(None) for value in get_args(option)]
        return Choice(None, *choices) if type(None) in options else Choice(*choices)
    raise TypeError(f"no validation rule for the type {hint!r}")  # a schema bug, not a user error


def _has_default(section: type, name: str) -> bool:
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _build(section: type, values: Any, prefix: str) -> Any:
    """Check ``values`` against the dataclass ``section`` and build it (nested sections too)."""
    where = prefix.rstrip(".") or "params"
    if not isinstance(values, dict):
        raise ParamsError(f"{where} must be a mapping of keys to values, got {values!r}")
    hints = get_type_hints(section, include_extras=True)
    names = [field.name for field in dataclasses.fields(section)]
    unknown = [key for key in values if key not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ParamsError(f"unknown key {prefix}{key}{hint}; known keys here: {', '.join(prefix + n for n in names)}")
    built: dict[str, Any] = {}
    for name in names:
        rule = _rule(hints[name])
        if name not in values:
            if _has_default(section, name):
                continue
            wanted = "a section" if isinstance(rule, type) else rule.allowed
            raise ParamsError(f"missing key {prefix}{name} ({wanted})")
        if isinstance(rule, type):
            built[name] = _build(rule, values[name], f"{prefix}{name}.")
        else:
            built[name] = rule.check(prefix + name, values[name])
    return section(**built)


def _cross_checks(params: Params) -> None:
    fractions = params.data.split_fractions
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ParamsError(
            f"data.split_fractions = {list(fractions)!r} is invalid; the three fractions "
            "(train, val, test) must sum to 1"
        )
    nproc = params.train.nproc_per_node
    for name in MODEL_NAMES:
        batch = params.models.section(name).batch_size
        if batch % nproc:
            raise ParamsError(
                f"models.{name}.batch_size = {batch} is invalid; it is the global batch and must be "
                f"divisible by train.nproc_per_node = {nproc}"
            )
        if batch // nproc < MIN_BATCH_PER_PROCESS:
            least = MIN_BATCH_PER_PROCESS * nproc
            allowed, shared = f"{least} or more", ""
            if nproc > 1:
                allowed = f"a multiple of {nproc}, at least {least}"
                shared = f"; with train.nproc_per_node = {nproc} each process trains on {batch // nproc} image"
            raise ParamsError(
                f"models.{name}.batch_size = {batch} is invalid{shared}; batch norm needs at least "
                f"{MIN_BATCH_PER_PROCESS} images per process and batch (allowed: {allowed})"
            )


def validate(raw: Any) -> Params:
    """Check a params mapping (as read from YAML) against the schema; return the typed params."""
    params = _build(Params, raw, "")
    _cross_checks(params)
    return params


def read_yaml(path: str | Path) -> Any:
    """Read a params file with the project's YAML reader (:func:`petseg.io.read_yaml`); errors are ParamsErrors."""
    try:
        return io.read_yaml(path)
    except DataError as exc:
        raise ParamsError(str(exc)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; errors name the file and the key."""
    path = Path(path)
    try:
        return validate(read_yaml(path))
    except ParamsError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise ParamsError(message) from None


def as_dict(section: Any) -> dict[str, Any]:
    """A section as plain nested dicts and lists (for checkpoints, signatures and logs)."""
    return dataclasses.asdict(
        section, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items}
    )
