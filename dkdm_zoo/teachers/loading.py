"""Load diffusers models and scheduler configs from a folder, a hub id or the Hugging Face cache,
with errors a user can act on. Where files are (``Source``) is ``dkdm_zoo.teachers.sources``.

Every layout users download is understood:

- a pipeline folder: ``model_index.json`` + ``unet/`` (or ``transformer/``, ``vae/``, ...) + ``scheduler/``;
- an old flat pipeline (google/ddpm-cifar10-32): ``model_index.json``, ``config.json``,
  ``scheduler_config.json`` and the weights all at the root, which diffusers' own loader accepts;
- a model folder: ``config.json`` + weights, with ``scheduler_config.json`` beside it or in ``../scheduler``.

``model_index.json`` entries a teacher does not need (safety_checker, feature_extractor, ...) are
never read. Weights load with ``from_pretrained`` and safetensors only unless ``allow_pickle`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import OptionSet
from dkdm_zoo.teachers.schedulers import SOURCE_KEY, read_schedule
from dkdm_zoo.teachers.sources import Source, read_json, resolve_source
from dkdm_zoo.teachers.unread import buildable_empty, empty_model, weights_are_unread

__all__ = [
    "DType",
    "Source",
    "check_weights",
    "find_model_folder",
    "load_pretrained",
    "load_scheduler_config",
    "parse_dtype",
    "read_config",
    "resolve_source",
    "schedule_spec_fields",
]

#: a teacher's ``dtype`` option: the type annotation every family's factory uses
DType = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class TeacherOptions(OptionSet):
    """The options of a built-in teacher family (its factory's ``Options``), checked on construction:
    the guidance scale and the dtype every family takes."""

    SECTION: ClassVar[str] = "teacher"

    guidance_scale: float | None = None  # classifier-free guidance; None or 1: none
    dtype: DType = "float32"


@dataclass(frozen=True)
class HubTeacherOptions(TeacherOptions):
    """What every family loaded from a hub id, a cached snapshot or a folder takes besides."""

    path: str | os.PathLike[str] | None = None  # hub id, cached snapshot or local folder
    allow_pickle: bool = False  # .bin / .ckpt weights (pickle runs code): only when you trust the source
    local_files_only: bool | None = None  # None: HF_HUB_OFFLINE decides


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFE_WEIGHTS = (".safetensors", ".safetensors.index.json")
_PICKLE_WEIGHTS = (".bin", ".ckpt", ".pt", ".pth", ".bin.index.json")
ALLOW_PICKLE_HINT = "--set teacher.allow_pickle=true"


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def find_model_folder(
    source: Source, candidates: tuple[str, ...], subfolder: str | None = None
) -> str | None:
    """The subfolder that holds the model's config.json (None: the root), for every layout.

    A pipeline's component folder wins over the root; a pipeline without it whose root holds a
    config.json is an old flat repository (google/ddpm-cifar10-32), as diffusers' loader accepts.
    """
    if subfolder:
        if source.fetch("config.json", subfolder) is None:
            raise UserError(
                f"{source.where(subfolder)} has no config.json: pass the subfolder of a diffusers model"
            )
        return subfolder
    for name in candidates:
        if source.fetch("config.json", name) is not None:
            return name
    if source.fetch("config.json") is not None:
        return None
    wanted = " or ".join(f"{c}/config.json" for c in candidates)
    if source.fetch("model_index.json") is not None:
        raise UserError(
            f"{source} is a diffusers pipeline without its model: no {wanted} and no config.json "
            f"in {source.where()}; the download may be incomplete (fetch it again) or the pipeline "
            "is of another family"
        )
    raise UserError(
        f"{source} is not a diffusers model: {source.where()} has no model_index.json (pipeline), "
        f"config.json (model) or {wanted}; save one with save_pretrained"
    )


def require_component(source: Source, component: str, family: str) -> None:
    """A pipeline component (``vae``, ``text_encoder``, ...) a family needs, or an error naming the file."""
    if source.fetch("config.json", component) is None:
        raise UserError(
            f"{source} has no {component}/config.json (searched {source.where(component)}): {family} needs "
            f"the pipeline's {component}/; the download may be incomplete (fetch it again)"
        )


def is_pipeline(source: Source) -> bool:
    return source.fetch("model_index.json") is not None


def load_scheduler_config(
    source: Source, model_subfolder: str | None, *, fill_defaults: bool = False
) -> dict[str, Any]:
    """The scheduler config of a pipeline (scheduler/), or beside a model folder, or in ../scheduler.

    ``fill_defaults`` completes missing keys with the named diffusers scheduler class's defaults
    (what that scheduler would do); only DDPM/DDIM-style configs want this.
    """
    tried = []
    candidates: list[str | None] = ["scheduler", model_subfolder]
    if model_subfolder is None and not source.is_hub:
        candidates.append("../scheduler")
    for sub in candidates:
        if sub == "../scheduler":
            path: Path | None = Path(source.location).parent / "scheduler" / "scheduler_config.json"
            path = path if path.is_file() else None
        else:
            path = source.fetch("scheduler_config.json", sub)
        tried.append(f"{sub}/scheduler_config.json" if sub else "scheduler_config.json")
        if path is not None:
            config = _renamed_keys(read_json(path))
            config = _with_defaults(config) if fill_defaults else config
            return {**config, SOURCE_KEY: str(path)}  # messages about its values name the file
    raise UserError(
        f"no scheduler config for {source}: tried {', '.join(tried)} in {source.where()}; "
        "save the scheduler beside the model"
    )


def _renamed_keys(config: dict[str, Any]) -> dict[str, Any]:
    """Old scheduler keys under their current names: ``predict_epsilon`` (diffusers < 0.10) became
    ``prediction_type`` ("epsilon" when true, "sample" when false)."""
    if "prediction_type" not in config and "predict_epsilon" in config:
        config = {**config, "prediction_type": "epsilon" if config["predict_epsilon"] else "sample"}
    return config


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    import diffusers

    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if cls is None or not hasattr(cls, "from_config"):
        return config
    return {**dict(cls.from_config(config).config), **config}


def check_weights(source: Source, subfolder: str | None, allow_pickle: bool) -> None:
    """Refuse a model folder whose weights are missing, or pickle only unless ``allow_pickle``."""
    names = source.listdir(subfolder)
    if any(n.endswith(_SAFE_WEIGHTS) for n in names):
        return
    pickles = [n for n in names if n.endswith(_PICKLE_WEIGHTS)]
    if pickles and not allow_pickle:
        raise UserError(_pickle_message(source.where(subfolder), pickles[0]))
    if not pickles:
        raise UserError(
            f"{source.where(subfolder)} has a config.json but no weights (*.safetensors or *.bin): "
            "the download may be incomplete (fetch it again), or save the model with save_pretrained"
        )


def _pickle_message(where: Any, name: str) -> str:
    return (
        f"{where} has only pickle weights ({name}), which can run code when loaded: convert them to "
        f"safetensors, or if you trust the source set allow_pickle=true ({ALLOW_PICKLE_HINT} on "
        "the command line, or allow_pickle = true in the recipe's [teacher] table)"
    )


def load_pretrained(
    cls: Any,
    source: Source,
    subfolder: str | None,
    *,
    allow_pickle: bool = False,
    dtype: str | torch.dtype = "float32",
    dtype_kwarg: str = "torch_dtype",
    weights: bool = True,
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained`` with safetensors only (unless ``allow_pickle``) and readable errors; under
    ``teachers.unread.weights_unread`` (``--dry-run``) a network is built from its config alone."""
    unread = weights and weights_are_unread() and buildable_empty(cls)
    if weights:
        check_weights(source, subfolder, allow_pickle)
    if weights and not unread:
        # allow_pickle: prefer safetensors where present, fall back to pickle
        kwargs["use_safetensors"] = True if not allow_pickle else None
        kwargs[dtype_kwarg] = parse_dtype(dtype)
    if subfolder:
        kwargs["subfolder"] = subfolder
    if not source.is_hub:
        kwargs["local_files_only"] = True  # a folder or a cached snapshot: never ask the hub
    try:
        if unread:  # shapes from the config only: the weights are checked to be there, never read
            return empty_model(cls, source.location, parse_dtype(dtype), **kwargs)
        return cls.from_pretrained(source.location, **kwargs)
    except UserError:
        raise
    except (OSError, ValueError) as exc:  # missing files, network errors, mismatched weights
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UserError(f"cannot load {cls.__name__} from {source.where(subfolder)}: {first}") from exc


def schedule_spec_fields(
    scheduler_config: dict[str, Any],
    *,
    learned: bool,
    where: Any = "",
    built_as: str | None = None,
    flow: bool = False,
) -> dict[str, Any]:
    """The TeacherSpec fields a diffusers scheduler config determines (T, betas, prediction, variance,
    clipping), every value checked and none guessed (``dkdm_zoo.teachers.schedulers.read_schedule``;
    ``built_as``: the scheduler class a dict built in code holds the arguments of; ``flow``: the family
    reads flow-matching teachers too)."""
    return read_schedule(scheduler_config, learned=learned, where=where, built_as=built_as, flow=flow)


def read_config(source: Source, subfolder: str | None) -> dict[str, Any]:
    """A model's config.json (empty when missing)."""
    path = source.fetch("config.json", subfolder)
    return read_json(path) if path is not None else {}
