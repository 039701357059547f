"""Loading the pipeline folders of the text-to-image flow families (sd3, flux, sana): each component
through ``load_pretrained`` (safetensors only unless allowed, readable errors), tokenizers without
weights, and the options they all share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dkdm_zoo.errors import UserError
from dkdm_zoo.teachers.loading import (
    HubTeacherOptions,
    Source,
    find_model_folder,
    load_pretrained,
    load_scheduler_config,
    require_component,
    resolve_source,
)


@dataclass(frozen=True)
class PromptedTeacherOptions(HubTeacherOptions):
    """A text-to-image flow family's options: where it is, its prompts, guidance, text length."""

    prompts: str | os.PathLike[str] | Sequence[str] | None = None  # a list, or a file with one per line
    max_sequence_length: int | None = None  # text tokens (T5 / Gemma); None: the family's pipeline default


def pipeline_source(options: HubTeacherOptions, family: str, pipeline: str) -> tuple[Source, str | None]:
    """The source of a ``pipeline`` folder and its transformer subfolder, or a one-line refusal."""
    source = resolve_source(options.path, options.local_files_only)
    folder = find_model_folder(source, ("transformer",))
    if folder is None:
        raise UserError(
            f"{source} is a single model folder: {family} needs a {pipeline} folder (model_index.json "
            "with transformer/, vae/, text encoders, tokenizers and scheduler/)"
        )
    return source, folder


class Components:
    """Loads one pipeline's components with the options' weights policy."""

    def __init__(self, source: Source, options: HubTeacherOptions, family: str):
        self.source, self.family = source, family
        self.weights = {"allow_pickle": options.allow_pickle, "dtype": options.dtype}

    def model(self, cls: Any, subfolder: str | None, *, transformers: bool = False) -> Any:
        if subfolder is not None:
            require_component(self.source, subfolder, self.family)
        kwarg = "dtype" if transformers else "torch_dtype"
        return load_pretrained(cls, self.source, subfolder, dtype_kwarg=kwarg, **self.weights)

    def tokenizer(self, cls: Any, subfolder: str) -> Any:
        if not self.source.listdir(subfolder):
            raise UserError(
                f"{self.source} has no {subfolder}/ files (searched {self.source.where(subfolder)}): "
                f"{self.family} needs the pipeline's {subfolder}; the download may be incomplete (fetch it again)"
            )
        return load_pretrained(cls, self.source, subfolder, weights=False)

    def scheduler_config(self, folder: str | None) -> dict[str, Any]:
        return load_scheduler_config(self.source, folder)


def family_pipeline(
    pipeline_class: str, scheduler_class: str, components: dict[str, Any], scheduler_config: dict[str, Any]
) -> Any:
    """The family's own diffusers pipeline over its loaded components and its saved scheduler config
    (both classes named by the family's code, never by a file)."""
    import diffusers

    scheduler = getattr(diffusers, scheduler_class).from_config(
        {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    )
    return getattr(diffusers, pipeline_class)(scheduler=scheduler, **components)
