"""Recipes: data-only TOML files naming teacher, student, method and training settings.

No code is executed while loading a recipe. Validation errors name the file, the key and what
was expected; unknown keys are errors. CLI flags and ``--set key=value`` override recipe values.

    [recipe]   name, description
    [teacher]  name = "ddpm-unet", then the teacher's options (path = "...", ...)
    [student]  name = "unet", preset = "small", then architecture overrides
    [method]   name = "dkdm", then the method's options (rho = 0.4, ...)
    [train]    the fields of TrainConfig
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dkdm_zoo.errors import UnknownNameError, UserError

SECTIONS = ("recipe", "teacher", "student", "method", "train")
RECIPE_KEYS = {"name": str, "description": str, "tags": list}


@dataclass
class TrainConfig:
    """Everything the engine needs that is not the algorithm."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    grad_accum: int = 1
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.9999  # 0 disables EMA
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    teacher_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    compile: bool = False
    channels_last: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    checkpoints_keep: int = 2
    preview_every: int = 500
    preview_samples: int = 16
    preview_steps: int = 25
    log_every: int = 10
    tracker: Literal["none", "tensorboard"] = "none"
    final_eval_samples: int = 0  # > 0: `distill` scores the final student and its teacher on N samples
    setup_checkpoint_minutes: float = 10.0  # a long method set-up (pool init) is checkpointed this often

    def validate(self, where: str = "train") -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "checkpoints_keep",
            "preview_samples",
            "preview_steps",
            "log_every",
        ):
            if getattr(self, name) <= 0:
                raise UserError(f"{where}.{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "preview_every", "final_eval_samples"):
            if getattr(self, name) < 0:
                raise UserError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if self.setup_checkpoint_minutes < 0:
            raise UserError(
                f"{where}.setup_checkpoint_minutes must be >= 0, got {self.setup_checkpoint_minutes}"
            )
        if self.lr <= 0:
            raise UserError(f"{where}.lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"{where}.ema_decay must be in [0, 1), got {self.ema_decay}")


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
    method: Component = field(default_factory=lambda: Component("dkdm"))
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def comp(c: Component) -> dict[str, Any]:
            return {"name": c.name, **{k: v for k, v in c.options.items() if v is not None}}

        recipe = {"name": self.name}
        if self.description:
            recipe["description"] = self.description
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

    def apply_overrides(self, assignments: list[str]) -> Recipe:
        """``section.key=value`` assignments (values parsed as TOML, else kept as strings)."""
        data = self.to_dict()
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
            data.setdefault(section, {})[name] = parse_value(raw)
        return recipe_from_dict(data, where="--set", source=self.source)


def parse_value(raw: str) -> Any:
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Check one TrainConfig value against its annotation; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise UserError(f"{where}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _check_type(value, arg, where)
            except UserError:
                continue
        raise UserError(f"{where}: expected {annotation}, got {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool) or not isinstance(value, annotation):
        raise UserError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _train_config(data: dict[str, Any], where: str) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for key, value in data.items():
        if key not in hints:
            close = [k for k in hints if k.startswith(key[:3])]
            raise UserError(
                f"{where}: unknown key 'train.{key}'"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
            )
        values[key] = _check_type(value, hints[key], f"{where}: train.{key}")
    config = TrainConfig(**values)
    config.validate(where=f"{where}: train")
    return config


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
        method=_component(data.get("method"), "method", where, default="dkdm"),
        train=_train_config(data.get("train", {}), where),
        source=source,
    )


def load_recipe_file(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"recipe file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    return recipe_from_dict(data, where=str(path), source=str(path), default_name=path.stem)


def validate_against_registry(recipe: Recipe, registry: Any, flags: dict[str, str] | None = None) -> None:
    """Every component name exists; option keys are among the entry's declared options.

    Errors start with where the value came from: ``flags`` maps a kind to the command-line flag
    that named it (``{"students": "--student"}``), otherwise the recipe's file or name, if any.
    """
    where = recipe.source or recipe.name
    prefix = f"{where}: " if where else ""
    for kind, comp in (
        ("teachers", recipe.teacher),
        ("students", recipe.student),
        ("methods", recipe.method),
    ):
        try:
            entry = registry.get(kind, comp.name)
        except UnknownNameError as exc:
            flag = (flags or {}).get(kind)
            raise UserError(f"{flag}: {exc}" if flag else f"{prefix}{kind[:-1]}.name: {exc}") from None
        if entry.options is None or kind == "students":
            continue  # undeclared options (or architecture overrides) are checked by the factory itself
        for key in comp.options:
            if key not in entry.options:
                raise UserError(
                    f"{prefix}unknown key '{kind[:-1]}.{key}' for {kind[:-1]} '{comp.name}'; "
                    f"expected one of {', '.join(sorted(entry.options)) or 'none'}"
                )


@dataclass
class RecipeInfo:
    name: str
    path: Path
    plugin: str
    description: str = ""
    teacher: str = ""
    student: str = ""
    method: str = ""


def discover_recipes(registry: Any) -> tuple[dict[str, RecipeInfo], list[str]]:
    """All recipes the plugins registered (name -> info), and problems found (duplicates)."""
    found: dict[str, RecipeInfo] = {}
    problems: list[str] = []
    for source in registry.recipe_sources:
        files = sorted(source.path.glob("*.toml")) if source.path.is_dir() else [source.path]
        for file in files:
            try:
                data = tomllib.loads(file.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                problems.append(f"{file}: {exc}")
                continue
            meta = data.get("recipe", {}) if isinstance(data.get("recipe"), dict) else {}
            name = meta.get("name", file.stem)
            if name in found:
                problems.append(
                    f"recipe '{name}' in {file} (plugin '{source.plugin}') duplicates {found[name].path} (plugin '{found[name].plugin}')"
                )
                continue
            section = _section_namer(data)
            found[name] = RecipeInfo(
                name=name,
                path=file,
                plugin=source.plugin,
                description=meta.get("description", ""),
                teacher=section("teacher"),
                student=section("student"),
                method=section("method") or "dkdm",
            )
    return found, problems


def _section_namer(data: dict[str, Any]):
    def name_of(section: str) -> str:
        value = data.get(section)
        return value.get("name", "") if isinstance(value, dict) else ""

    return name_of


def resolve_recipe(name_or_path: str, registry: Any) -> Recipe:
    """A recipe by registered name or by file path, validated against the registry."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        recipe = load_recipe_file(path)
    else:
        known, _ = discover_recipes(registry)
        if name_or_path not in known:
            raise registry.unknown_name("recipes", name_or_path, known)
        recipe = load_recipe_file(known[name_or_path].path)
    validate_against_registry(recipe, registry)
    return recipe
