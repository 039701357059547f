"""Recipes: data-only TOML files naming teacher, student, method and training settings.

No code is executed while loading a recipe. Validation errors name the file, the key and what
was expected; unknown keys are errors. CLI flags and ``--set key=value`` override recipe values.

    [recipe]   name, description
    [teacher]  name = "ddpm-unet", then the teacher's options (path = "...", ...)
    [student]  name = "unet", preset = "small", then architecture overrides
    [method]   name = "dkdm" (the default), then the method's options (rho = 0.4, ...)
    [train]    the fields of TrainConfig
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry.options import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitInterval,
)

SECTIONS = ("recipe", "teacher", "student", "method", "train")
#: the method a recipe or command without one uses
DEFAULT_METHOD = "dkdm"
RECIPE_KEYS = {"name": str, "description": str, "tags": list, "train_defaults": dict}


@dataclass
class TrainConfig:
    """Everything the engine needs that is not the algorithm.

    The annotations are the schema (``dkdm_zoo.registry.options``): recipe values, ``--set train.KEY=VALUE``
    and flags are checked and converted against them, ranges included.
    """

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 0.0
    adam_beta1: UnitInterval = 0.9
    adam_beta2: UnitInterval = 0.999
    warmup_steps: NonNegativeInt = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    grad_accum: PositiveInt = 1
    grad_clip: NonNegativeFloat = 1.0  # 0 disables clipping
    ema_decay: UnitInterval = 0.9999  # 0 disables EMA
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    teacher_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    compile: bool = False
    channels_last: bool = False
    seed: NonNegativeInt = 0
    checkpoint_every: NonNegativeInt = 500
    checkpoints_keep: PositiveInt = 2
    preview_every: NonNegativeInt = 500
    preview_samples: PositiveInt = 16
    preview_steps: PositiveInt = 25
    log_every: PositiveInt = 10
    tracker: Literal["none", "tensorboard"] = "none"
    final_eval_samples: NonNegativeInt = (
        0  # > 0: `distill` scores the final student and its teacher on N samples
    )
    setup_checkpoint_minutes: NonNegativeFloat = (
        10.0  # a long method set-up (pool init) is checkpointed this often
    )
    # processes: "ddp" replicates every network; "fsdp" shards every trainable network and the
    # teacher's denoiser over the processes (FSDP2 through accelerate; engine/sharding.py)
    sharding: Literal["ddp", "fsdp"] = "ddp"
    # fsdp with mixed_precision="bf16": parameters gathered in bf16, gradients reduced in this dtype
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"
    activation_checkpointing: bool = False  # recompute each block in the backward (diffusers' own)
    cpu_offload: bool = False  # fsdp: sharded parameters, gradients and AdamW state live in host memory


@functools.cache
def train_schema() -> Any:
    """The train section's schema: TrainConfig's annotated fields (``dkdm_zoo.registry.options.Schema``)."""
    from dkdm_zoo.registry.options import schema_of

    return schema_of(TrainConfig)


def train_config(
    values: Mapping[str, Any], *, where: str = "", base: TrainConfig | None = None
) -> TrainConfig:
    """``base`` (default: TrainConfig's defaults) with ``values`` checked, converted and applied."""
    checked = train_schema().check(values, section="train", where=where)
    return dataclasses.replace(base if base is not None else TrainConfig(), **checked)


@dataclass
class Component:
    """A registry name plus keyword options (a teacher, a student or a method)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    teacher: Component
    student: Component
    method: Component = field(default_factory=lambda: Component(DEFAULT_METHOD))
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""
    source: str | None = None
    #: the train keys a recipe, a flag or ``--set`` gave; every other field of ``train`` holds
    #: TrainConfig's default (defaults from elsewhere, a student's say, may fill only those)
    train_set: frozenset[str] = frozenset()
    #: the train keys filled from a student's or method's declared defaults -> who declared them
    #: (``apply_train_defaults``); written to recipe.toml as ``[recipe] train_defaults``
    train_defaults: dict[str, str] = field(default_factory=dict)

    def set_train(self, values: Mapping[str, Any], *, where: str) -> Recipe:
        """This recipe with ``values`` (checked) in its train section, recorded as set."""
        train = train_config(values, where=where, base=self.train)
        declared = {k: v for k, v in self.train_defaults.items() if k not in values}
        return dataclasses.replace(
            self, train=train, train_set=self.train_set | set(values), train_defaults=declared
        )

    def to_dict(self) -> dict[str, Any]:
        def comp(c: Component) -> dict[str, Any]:
            return {"name": c.name, **{k: v for k, v in c.options.items() if v is not None}}

        recipe = {"name": self.name}
        if self.description:
            recipe["description"] = self.description
        if self.train_defaults:
            recipe["train_defaults"] = dict(self.train_defaults)
        return {
            "recipe": recipe,
            "teacher": comp(self.teacher),
            "student": comp(self.student),
            "method": comp(self.method),
            "train": dataclasses.asdict(self.train),
        }

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def apply_overrides(self, assignments: Iterable[str]) -> Recipe:
        """``section.key=value`` assignments (values parsed as TOML, else kept as strings); train values
        are checked here, component options against the registry (``validate_against_registry``)."""
        recipe = self
        for section, name, value, item in parse_assignments(assignments):
            if section == "train":
                recipe = recipe.set_train({name: value}, where=f"--set {item}")
                continue
            data = recipe.to_dict()
            data.setdefault(section, {})[name] = value
            changed = recipe_from_dict(data, where=f"--set {item}", source=self.source)
            recipe = dataclasses.replace(changed, train=recipe.train, train_set=recipe.train_set)
        return recipe


def parse_assignments(assignments: Iterable[str]) -> list[tuple[str, str, Any, str]]:
    """``section.key=value`` items as (section, key, parsed value, the item as given)."""
    parsed = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise UserError(
                f"--set {item!r}: expected section.key=value, e.g. train.steps=100 or method.rho=0.2"
            )
        if section not in SECTIONS:
            raise UserError(
                f"--set {item!r}: unknown section '{section}'; expected one of {', '.join(SECTIONS)}"
            )
        parsed.append((section, name.strip(), parse_value(raw), item))
    return parsed


def parse_value(raw: str) -> Any:
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _train_config(data: Any, where: str) -> TrainConfig:
    if not isinstance(data, dict):
        raise UserError(f"{where}: [train] must be a table of train settings")
    return train_config(data, where=where)


def _component(data: Any, section: str, where: str, default: str | None = None) -> Component:
    if data is None and default is not None:
        return Component(default)
    if not isinstance(data, dict):
        raise UserError(f'{where}: [{section}] must be a table with at least name = "..."')
    options = dict(data)
    name = options.pop("name", default)
    if not isinstance(name, str) or not name:
        raise UserError(
            f"{where}: missing key '{section}.name' (a registered {section} name, see `dkdm-zoo list`)"
        )
    return Component(name, options)


def recipe_from_dict(
    data: dict[str, Any], *, where: str, source: str | None = None, default_name: str = ""
) -> Recipe:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise UserError(
            f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}"
        )
    meta = data.get("recipe", {})
    for key, value in meta.items():
        if key not in RECIPE_KEYS:
            raise UserError(f"{where}: unknown key 'recipe.{key}'; expected {', '.join(RECIPE_KEYS)}")
        if not isinstance(value, RECIPE_KEYS[key]):
            raise UserError(f"{where}: recipe.{key} must be a {RECIPE_KEYS[key].__name__}")
    for section in ("teacher", "student"):
        if section not in data:
            raise UserError(f"{where}: missing section [{section}]")
    return Recipe(
        name=meta.get("name", default_name),
        description=meta.get("description", ""),
        teacher=_component(data["teacher"], "teacher", where),
        student=_component(data["student"], "student", where),
        method=_component(data.get("method"), "method", where, default=DEFAULT_METHOD),
        train=_train_config(data.get("train", {}), where),
        source=source,
        train_set=frozenset(data.get("train", {})),
        train_defaults={str(k): str(v) for k, v in meta.get("train_defaults", {}).items()},
    )


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's data; a missing file, a folder, unreadable bytes or bad TOML is one line naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"recipe file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(
            f"{path} is a folder, not a recipe file: pass a .toml file or a recipe name"
        ) from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): "
            "save the recipe as UTF-8"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None


def load_recipe_file(path: str | Path) -> Recipe:
    path = Path(path)
    return recipe_from_dict(read_toml(path), where=str(path), source=str(path), default_name=path.stem)
