"""The one schema of params.yaml, and its validation.

Every stage validates the whole file before doing any work, so a typo such as
``train.learnig_rate`` or ``lr: -1`` stops the pipeline at once with a message
that names the key, the value and what is allowed. Library code never reads
params.yaml; stages pass it the validated values.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from petseg.errors import ParamsError

MODEL_NAMES = ("unet", "resnet34_unet")


# --------------------------------------------------------------------------- YAML


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float, as YAML 1.2 (and DVC) do."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file (YAML 1.2 numbers), with a clear error naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


# ------------------------------------------------------------------------- specs


class Spec:
    """One leaf of the schema: checks a value and returns it normalised."""

    allowed = ""

    def check(self, key: str, value: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, key: str, value: Any, why: str | None = None) -> ParamsError:
        reason = why or f"allowed: {self.allowed}"
        return ParamsError(f"{key} = {value!r} is invalid; {reason}")


class Int(Spec):
    def __init__(self, min: int | None = None, max: int | None = None, multiple_of: int | None = None):
        self.min, self.max, self.multiple_of = min, max, multiple_of
        parts = ["an integer"]
        if min is not None:
            parts.append(f">= {min}")
        if max is not None:
            parts.append(f"<= {max}")
        if multiple_of is not None:
            parts.append(f"and a multiple of {multiple_of}")
        self.allowed = " ".join(parts)

    def check(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.fail(key, value)
        if self.min is not None and value < self.min:
            raise self.fail(key, value)
        if self.max is not None and value > self.max:
            raise self.fail(key, value)
        if self.multiple_of is not None and value % self.multiple_of:
            raise self.fail(key, value)
        return value


class Float(Spec):
    def __init__(self, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None):
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le
        bounds = []
        if gt is not None:
            bounds.append(f"> {gt}")
        if ge is not None:
            bounds.append(f">= {ge}")
        if lt is not None:
            bounds.append(f"< {lt}")
        if le is not None:
            bounds.append(f"<= {le}")
        self.allowed = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def check(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, value)
        value = float(value)
        if not math.isfinite(value):
            raise self.fail(key, value)
        if (self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge):
            raise self.fail(key, value)
        if (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le):
            raise self.fail(key, value)
        return value


class Bool(Spec):
    allowed = "true or false"

    def check(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value)
        return value


class Str(Spec):
    def __init__(self, pattern: str | None = None, allowed: str = "a non-empty string"):
        self.pattern = re.compile(pattern) if pattern else None
        self.allowed = allowed

    def check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self.fail(key, value)
        return value


class OneOrMore(Spec):
    """One value or a non-empty list of them; always returned as a list."""

    def __init__(self, item: Spec):
        self.item = item
        self.allowed = f"{item.allowed}, or a non-empty list of them"

    def check(self, key: str, value: Any) -> list:
        if isinstance(value, list):
            if not value:
                raise self.fail(key, value)
            try:
                return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
            except ParamsError:
                raise self.fail(key, value) from None
        try:
            return [self.item.check(key, value)]
        except ParamsError:
            raise self.fail(key, value) from None


class Choice(Spec):
    def __init__(self, *choices: Any):
        self.choices = choices
        self.allowed = "one of " + ", ".join("null" if c is None else str(c) for c in choices)

    def check(self, key: str, value: Any) -> Any:
        if not any(type(value) is type(choice) and value == choice for choice in self.choices):
            raise self.fail(key, value)
        return value


class Nullable(Spec):
    def __init__(self, inner: Spec):
        self.inner = inner
        self.allowed = f"null or {inner.allowed}"

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return self.inner.check(key, value)
        except ParamsError:
            raise self.fail(key, value) from None


class ListOf(Spec):
    def __init__(self, item: Spec, length: int | None = None, min_length: int = 1):
        self.item, self.length, self.min_length = item, length, min_length
        count = f"{length}" if length is not None else f"at least {min_length}"
        self.allowed = f"a list of {count} items, each {item.allowed}"

    def check(self, key: str, value: Any) -> list:
        if not isinstance(value, list):
            raise self.fail(key, value)
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise self.fail(key, value)
        return [self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]


PROBABILITY = Float(ge=0.0, le=1.0)
JITTER = Float(ge=0.0, lt=1.0)
MD5 = Str(r"[0-9a-fA-F]{32}", "an md5 hex digest (32 hex digits)")
URL = Str(r"(https?|file)://\S+", "an http(s):// or file:// URL")
DEVICE = Str(r"auto|cpu|mps|cuda(:[0-9]+)?", "auto, cpu, mps, cuda or cuda:N")

SCHEMA: dict[str, Any] = {
    "data": {
        "source": Choice("synthetic", "oxford-iiit-pet"),
        "images_url": OneOrMore(URL),
        "annotations_url": OneOrMore(URL),
        "images_md5": MD5,
        "annotations_md5": MD5,
        "image_size": Int(min=32, max=2048, multiple_of=32),
        "split": Choice("official", "random"),
        "split_fractions": ListOf(Float(gt=0.0, lt=1.0), length=3),
        "val_every": Int(min=2),
        "seed": Int(min=0),
        "synthetic": {
            "n_trainval": Int(min=2),
            "n_test": Int(min=1),
        },
    },
    "preprocess": {
        "workers": Int(min=0),
        "jpeg_draft": Bool(),
    },
    "train": {
        "epochs": Int(min=1),
        "lr": Float(gt=0.0, lt=10.0),
        "weight_decay": Float(ge=0.0),
        "seed": Int(min=0),
        "loss": Choice("bce", "dice", "bce+dice"),
        "optimizer": Choice("adam", "adamw"),
        "scheduler": Choice("none", "plateau", "cosine", "onecycle"),
        "augment": {
            "hflip": PROBABILITY,
            "vflip": PROBABILITY,
            "brightness": JITTER,
            "contrast": JITTER,
            "saturation": JITTER,
        },
        "device": DEVICE,
        "compile": Bool(),
        "nproc_per_node": Int(min=1),
    },
    "models": {
        "unet": {
            "base_channels": Int(min=1, max=512),
            "batch_size": Int(min=1),
        },
        "resnet34_unet": {
            "encoder_weights": Choice(None, "imagenet"),
            "batch_size": Int(min=1),
        },
    },
    "evaluate": {
        "threshold": Float(gt=0.0, lt=1.0),
        "tta": Bool(),
        "n_worst": Int(min=0, max=64),
        "batch_size": Int(min=1),
    },
    "infer": {
        "model": Choice(*MODEL_NAMES),
        "input_dir": Nullable(Str()),
        "threshold": Float(gt=0.0, lt=1.0),
    },
}


def _walk(schema: dict[str, Any], values: Any, prefix: str) -> dict[str, Any]:
    where = prefix.rstrip(".") or "params"
    if not isinstance(values, dict):
        raise ParamsError(f"{where} must be a mapping of keys to values, got {values!r}")
    unknown = [k for k in values if k not in schema]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(schema), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        known = ", ".join(prefix + k for k in schema)
        raise ParamsError(f"unknown key {prefix}{key}{hint}; known keys here: {known}")
    result: dict[str, Any] = {}
    for key, spec in schema.items():
        full = prefix + key
        if key not in values:
            wanted = "a section" if isinstance(spec, dict) else spec.allowed
            raise ParamsError(f"missing key {full} ({wanted})")
        if isinstance(spec, dict):
            result[key] = _walk(spec, values[key], full + ".")
        else:
            result[key] = spec.check(full, values[key])
    return result


def _cross_checks(params: dict[str, Any]) -> None:
    fractions = params["data"]["split_fractions"]
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ParamsError(f"data.split_fractions = {fractions!r} is invalid; the three fractions (train, val, test) must sum to 1")
    nproc = params["train"]["nproc_per_node"]
    for name in MODEL_NAMES:
        batch = params["models"][name]["batch_size"]
        if batch % nproc:
            raise ParamsError(
                f"models.{name}.batch_size = {batch} is invalid; it is the global batch and must be "
                f"divisible by train.nproc_per_node = {nproc}"
            )


def validate(raw: Any) -> dict[str, Any]:
    """Check a params mapping against the schema; return it with numbers normalised."""
    params = _walk(SCHEMA, raw, "")
    _cross_checks(params)
    return params


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file; errors name the file and the key."""
    path = Path(path)
    try:
        return validate(read_yaml(path))
    except ParamsError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise ParamsError(message) from None
