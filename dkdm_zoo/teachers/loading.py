"""Load diffusers models and scheduler configs from a hub id or a local folder, with errors a user can act on.

Two layouts are understood, on disk or on the hub:

- a pipeline folder: ``model_index.json`` + ``unet/`` (or ``transformer/``, ``vae/``, ...) + ``scheduler/``;
- a model folder: ``config.json`` + weights, with ``scheduler_config.json`` beside it or in ``../scheduler``.

Weights load with ``from_pretrained`` and safetensors only unless ``allow_pickle`` is set.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dkdm_zoo.errors import UserError

# "org/name" as the hub spells repository ids; a single bare word is treated as a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAFE_WEIGHTS = (".safetensors", ".safetensors.index.json")
_PICKLE_WEIGHTS = (".bin", ".ckpt", ".pt", ".pth", ".bin.index.json")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _offline(local_files_only: bool | None) -> bool:
    from huggingface_hub import constants

    return bool(local_files_only) or bool(constants.HF_HUB_OFFLINE)


@dataclass(frozen=True)
class Source:
    """Where a teacher's files live: a local folder or a hub repository id."""

    location: str
    is_hub: bool
    local_files_only: bool | None = None

    def __str__(self) -> str:
        return self.location

    def fetch(self, filename: str, subfolder: str | None = None) -> Path | None:
        """The local path of ``subfolder/filename``, or None if the folder or repo has no such file."""
        rel = f"{subfolder}/{filename}" if subfolder else filename
        if not self.is_hub:
            path = Path(self.location) / rel
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
        )

        if _offline(self.local_files_only):
            cached = try_to_load_from_cache(self.location, rel)
            if isinstance(cached, str):
                return Path(cached)
            if cached is not None:  # the hub said before that this file does not exist
                return None
            raise self.not_cached_error()
        try:
            return Path(hf_hub_download(self.location, rel))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:  # no network and not cached
            raise self.not_cached_error() from exc
        except RepositoryNotFoundError as exc:
            raise UserError(
                f"hub repository '{self.location}' not found (or gated/private): check the id, "
                "log in with `hf auth login`, or pass path=<local diffusers folder>"
            ) from exc
        except EntryNotFoundError:
            return None
        except OSError as exc:  # connection problems surface as requests/httpx OSErrors
            raise self.not_cached_error() from exc

    def not_cached_error(self) -> UserError:
        why = "HF_HUB_OFFLINE=1 / local_files_only" if _offline(self.local_files_only) else "no network"
        return UserError(
            f"hub model '{self.location}' is not in the local Hugging Face cache and cannot be downloaded "
            f"({why}): download it where there is internet (`hf download {self.location}`) "
            "or pass path=<local diffusers folder>"
        )


def resolve_source(path: str | os.PathLike[str] | None, local_files_only: bool | None = None) -> Source:
    """A local folder if ``path`` exists, a hub id if it looks like one, else a UserError."""
    if path is None or str(path).strip() == "":
        raise UserError(
            "the teacher needs a path: a local diffusers folder or a hub id like google/ddpm-cifar10-32"
        )
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise UserError(f"teacher path {text} is a file: pass the diffusers folder that contains it")
        return Source(str(local.resolve()), is_hub=False, local_files_only=local_files_only)
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return Source(text, is_hub=True, local_files_only=local_files_only)
    raise UserError(
        f"teacher path {text} does not exist and is not a hub id (org/name): "
        "pass an existing diffusers folder or a hub id like google/ddpm-cifar10-32"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def find_model_folder(
    source: Source, candidates: tuple[str, ...], subfolder: str | None = None
) -> str | None:
    """The subfolder that holds the model's config.json (None: the root), for either layout."""
    if subfolder:
        if source.fetch("config.json", subfolder) is None:
            raise UserError(
                f"{source} has no {subfolder}/config.json: pass the subfolder of a diffusers model"
            )
        return subfolder
    if source.fetch("model_index.json") is not None:
        for name in candidates:
            if source.fetch("config.json", name) is not None:
                return name
        raise UserError(
            f"{source} is a diffusers pipeline without a {' or '.join(c + '/' for c in candidates)} model: "
            "pass subfolder=<model folder> or a pipeline of the right kind"
        )
    if source.fetch("config.json") is not None:
        return None
    for name in candidates:  # a pipeline-style folder saved without model_index.json
        if source.fetch("config.json", name) is not None:
            return name
    raise UserError(
        f"{source} is not a diffusers model: it has no model_index.json (pipeline folder) or config.json "
        "(model folder); save one with save_pretrained"
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
    candidates: list[tuple[str, str | None]] = [("scheduler_config.json", "scheduler")]
    if model_subfolder:
        candidates.append(("scheduler_config.json", model_subfolder))
    else:
        candidates.append(("scheduler_config.json", None))
        if not source.is_hub:
            candidates.append(("scheduler_config.json", "../scheduler"))
    for filename, sub in candidates:
        if sub == "../scheduler":
            path = Path(source.location).parent / "scheduler" / filename
            path = path if path.is_file() else None
        else:
            path = source.fetch(filename, sub)
        tried.append(f"{sub}/{filename}" if sub else filename)
        if path is not None:
            config = _read_json(path)
            return _with_defaults(config) if fill_defaults else config
    raise UserError(
        f"no scheduler config for {source}: tried {', '.join(tried)}; save the scheduler beside the model"
    )


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    import diffusers

    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if cls is None or not hasattr(cls, "from_config"):
        return config
    return {**dict(cls.from_config(config).config), **config}


def check_weights(source: Source, subfolder: str | None, allow_pickle: bool) -> None:
    """Refuse a local model folder whose weights are pickle only, unless ``allow_pickle``."""
    if source.is_hub:
        return  # the hub case is caught from from_pretrained's error
    folder = Path(source.location) / (subfolder or "")
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(_SAFE_WEIGHTS) for n in names):
        return
    pickles = [n for n in names if n.endswith(_PICKLE_WEIGHTS)]
    if pickles and not allow_pickle:
        raise UserError(_pickle_message(folder, pickles[0]))
    if not pickles:
        raise UserError(
            f"{folder} has a config but no weights (*.safetensors): save the model with save_pretrained"
        )


def _pickle_message(where: Any, name: str) -> str:
    return (
        f"{where} has only pickle weights ({name}), which can run code when loaded: convert them to "
        "safetensors, or pass allow_pickle=True if you trust the source"
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
    """``cls.from_pretrained`` with safetensors only (unless ``allow_pickle``) and readable errors."""
    if weights:
        check_weights(source, subfolder, allow_pickle)
        # allow_pickle: prefer safetensors where present, fall back to pickle
        kwargs["use_safetensors"] = True if not allow_pickle else None
        kwargs[dtype_kwarg] = parse_dtype(dtype)
    if subfolder:
        kwargs["subfolder"] = subfolder
    if source.is_hub and _offline(source.local_files_only):
        kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(source.location, **kwargs)
    except UserError:
        raise
    except OSError as exc:  # diffusers / transformers wrap missing files and network errors as OSError
        text = str(exc)
        if source.is_hub and "safetensors" in text and not allow_pickle:
            raise UserError(_pickle_message(f"hub model '{source}'", "no .safetensors file")) from exc
        if source.is_hub:
            raise source.not_cached_error() from exc
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise UserError(f"cannot load {cls.__name__} from {source}/{subfolder or ''}: {first}") from exc


SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "trained_betas")
_LOG_VARIANCES = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}


def schedule_spec_fields(
    scheduler_config: dict[str, Any], *, learned: bool, where: Any = ""
) -> dict[str, Any]:
    """The TeacherSpec fields a diffusers scheduler config determines (schedule, prediction, variance)."""
    at = f"{where}: " if str(where) else ""  # errors name the teacher when the caller says which
    variance_type = scheduler_config.get("variance_type") or "fixed_small"
    if learned:
        variance_type = "learned_range"
    elif variance_type == "learned":  # a raw log variance, not IDDPM's interpolation
        raise UserError(f"{at}variance_type 'learned' is not supported (use learned_range or fixed_*)")
    else:  # diffusers' *_log variants are the same variances stored as logs
        variance_type = _LOG_VARIANCES.get(variance_type, variance_type)
    if variance_type not in ("fixed_small", "fixed_large", "learned_range"):
        variance_type = "fixed_small"
    prediction_type = scheduler_config.get("prediction_type") or "epsilon"
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise UserError(
            f"{at}prediction_type {prediction_type!r} is not supported (epsilon, v_prediction, sample)"
        )
    return {
        "num_train_timesteps": int(scheduler_config.get("num_train_timesteps", 1000)),
        "schedule": {k: scheduler_config[k] for k in SCHEDULE_KEYS if scheduler_config.get(k) is not None},
        "prediction_type": prediction_type,
        "variance_type": variance_type,
        "clip_sample": bool(scheduler_config.get("clip_sample", False)),
        "clip_sample_range": float(scheduler_config.get("clip_sample_range", 1.0)),
    }


def read_config(source: Source, subfolder: str | None) -> dict[str, Any]:
    """A model's config.json (empty when missing)."""
    path = source.fetch("config.json", subfolder)
    return _read_json(path) if path is not None else {}
