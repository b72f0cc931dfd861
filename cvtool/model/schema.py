"""The metadata a model file carries (a checkpoint's "cvtool" JSON, an ONNX export's metadata_props), as a schema.

Checked once, where a file is opened (cvtool.model.checkpoint.read_meta, cvtool.cli.models), so that nothing after
it meets a string where a number goes, a colour of 999, a std of 0 or NaN, fewer class names than the net has
outputs or an unknown activation. A file that fails is one DataError naming the field:

    model.safetensors: metadata field normalization.std[0] must be a finite number greater than 0, got 0

The schema is data: Num, Text, Items (a list) and Fields (an object) nest; ranges are cvtool.bounds' Bounds, the
same ones the command line's options use.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

from cvtool.bounds import COUNT, NON_NEGATIVE, OPEN_FRACTION, POSITIVE, SEED, Bound
from cvtool.data.io import MAX_CLASSES
from cvtool.errors import DataError
from cvtool.model.spec import ACTIVATIONS, ENCODERS, NORMS

MAX_TEXT = 256  # characters of a class name or any other string field


class Num(NamedTuple):
    bound: Bound = Bound()


class Text(NamedTuple):
    choices: tuple[str, ...] | None = None
    max_len: int = MAX_TEXT


class Flag(NamedTuple):
    """true or false."""


class Maybe(NamedTuple):
    """null, or what `item` says."""

    item: "Schema"


class Items(NamedTuple):
    item: "Schema"
    length: int | None = None  # exactly this many
    min_len: int = 0


class Fields(NamedTuple):
    fields: dict[str, "Schema"]
    required: tuple[str, ...] = ()
    closed: bool = False  # unknown keys are an error (the spec: every field means something)


Schema = Union[Num, Text, Flag, Maybe, Items, Fields]


def _got(v: Any) -> str:
    """What was found, for the message: a number as written, anything else by its kind."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return {bool: "true/false", str: "a string", list: "a list", dict: "an object", type(None): "null"}.get(
        type(v), type(v).__name__)


def _quoted(v: str) -> str:
    return repr(v) if len(v) <= 40 else repr(v[:37]) + "..."


def check(v: Any, schema: Schema, field: str) -> None:
    """Raise ValueError(field, problem) at the first value that does not fit."""
    if isinstance(schema, Num):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not schema.bound.holds(v):
            raise ValueError(field, f"must be {schema.bound.text()}, got {_got(v)}")
    elif isinstance(schema, Flag):
        if not isinstance(v, bool):
            raise ValueError(field, f"must be true or false, got {_got(v)}")
    elif isinstance(schema, Maybe):
        if v is not None:
            check(v, schema.item, field)
    elif isinstance(schema, Text):
        if not isinstance(v, str):
            raise ValueError(field, f"must be a string, got {_got(v)}")
        if schema.choices is not None and v not in schema.choices:
            raise ValueError(field, f"must be one of {', '.join(schema.choices)}, got {_quoted(v)}")
        if len(v) > schema.max_len:
            raise ValueError(field, f"is {len(v)} characters long, at most {schema.max_len}")
    elif isinstance(schema, Items):
        if not isinstance(v, list):
            raise ValueError(field, f"must be a list, got {_got(v)}")
        if schema.length is not None and len(v) != schema.length:
            raise ValueError(field, f"must hold {schema.length} values, got {len(v)}")
        if len(v) < schema.min_len:
            raise ValueError(field, f"must hold at least {schema.min_len} values, got {len(v)}")
        for i, item in enumerate(v):
            check(item, schema.item, f"{field}[{i}]")
    else:
        if not isinstance(v, dict):
            raise ValueError(field, f"must be an object, got {_got(v)}")
        for key in schema.required:
            if key not in v:
                raise ValueError(f"{field}.{key}".lstrip("."), "is missing")
        for key, item in v.items():
            if key in schema.fields:
                check(item, schema.fields[key], f"{field}.{key}".lstrip("."))
            elif schema.closed:
                raise ValueError(f"{field}.{key}".lstrip("."), "is not a field this version knows")


# --- the schema of cvtool's model metadata ----------------------------------------------------------

def _int(lo: int, hi: int) -> Num:
    return Num(Bound(lo=lo, hi=hi, integer=True))


FINITE = Num(Bound())
SPEC = Fields({"in_channels": _int(1, 64), "num_classes": _int(2, MAX_CLASSES), "width": _int(1, 4096), "depth": _int(0, 6),
               "activation": Text(ACTIVATIONS), "norm": Text(NORMS), "arch": Text(("unet",)),
               "encoder": Text(ENCODERS)}, required=("in_channels", "num_classes"), closed=True)
EPOCHS_DONE = Bound(lo=0, hi=2**31 - 1, integer=True)  # a checkpoint's epochs: 0 for a start saved before any

CONFIG = Fields({"epochs": Num(EPOCHS_DONE), "batch_size": Num(COUNT), "img_size": Num(COUNT), "lr": Num(POSITIVE),
                 "warmup": Num(Bound(lo=0, hi=1, hi_open=True)), "weight_decay": Num(NON_NEGATIVE),
                 "width": Num(COUNT), "depth": _int(0, 6), "val_split": Num(OPEN_FRACTION), "seed": Num(SEED),
                 "time_budget": Maybe(Num(POSITIVE)), "dice": Num(NON_NEGATIVE), "synth_train": Num(COUNT),
                 "synth_val": Num(Bound(lo=0, integer=True)), "synth_size": Num(Bound(lo=8, integer=True)),
                 "optimizer": Text(), "schedule": Text(), "activation": Text(), "norm": Text(), "backend": Text(),
                 "device": Text()})
META = Fields({
    "format": Text(), "cvtool_version": Text(), "spec": SPEC,
    "classes": Items(Text(), min_len=2),
    "colors": Items(Items(_int(0, 255), length=3)),
    "normalization": Fields({"mean": Items(FINITE), "std": Items(Num(POSITIVE))}, required=("mean", "std")),
    "preprocess": Fields({"scale": Num(Bound(lo=0, hi=16, lo_open=True)), "tta": Text(("none", "flip", "dihedral"))}),
    "train_state": Fields({"config": CONFIG, "epoch": Num(Bound(lo=0, integer=True)),
                           "step": Num(Bound(lo=0, integer=True)), "optim_step": Num(Bound(lo=0, integer=True)),
                           "class_weights": Maybe(Items(FINITE)), "plan": Fields({}), "run": Fields({})}),
    "half": Flag(), "source_sha256": Maybe(Text()), "input": Text(), "output": Text(),  # an ONNX export's
}, required=("spec", "classes", "colors"))


def validate_meta(meta: Any, source: str) -> dict:
    """meta, unchanged, when it fits META and agrees with itself (a name and a colour per output class, a mean and
    a std per input channel); else one DataError naming the field."""
    try:
        check(meta, META, "")
        spec = meta["spec"]
        K, C = spec.get("num_classes", 4), spec.get("in_channels", 3)  # ModelSpec's defaults
        if len(meta["classes"]) != K:
            raise ValueError("classes", f"names {len(meta['classes'])} classes, but spec.num_classes is {K}")
        if len(meta["colors"]) != K:
            raise ValueError("colors", f"holds {len(meta['colors'])} colours for {K} classes")
        for key in ("mean", "std"):
            got = len((meta.get("normalization") or {}).get(key, [0] * C))
            if got != C:
                raise ValueError(f"normalization.{key}", f"holds {got} values for {C} input channels")
    except ValueError as e:
        field, problem = e.args
        what = f"metadata field {field}" if field else "metadata"
        raise DataError(f"{source}: {what} {problem}", hint="the file was not written by this cvtool, or was edited "
                        "since: export or train it again") from None
    return meta


__all__ = ["validate_meta", "check", "META", "SPEC", "Num", "Text", "Flag", "Maybe", "Items", "Fields"]
