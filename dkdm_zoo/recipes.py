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
import functools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dkdm_zoo.errors import UnknownNameError, UserError
from dkdm_zoo.options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from dkdm_zoo.registry.hookspecs import DEFAULT_STUDENT_PRESET

SECTIONS = ("recipe", "teacher", "student", "method", "train")
RECIPE_KEYS = {"name": str, "description": str, "tags": list, "train_defaults": dict}


@dataclass
class TrainConfig:
    """Everything the engine needs that is not the algorithm.

    The annotations are the schema (``dkdm_zoo.options``): recipe values, ``--set train.KEY=VALUE``
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


@functools.cache
def train_schema() -> Any:
    """The train section's schema: TrainConfig's annotated fields (``dkdm_zoo.options.Schema``)."""
    from dkdm_zoo.options import schema_of

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
    method: Component = field(default_factory=lambda: Component("dkdm"))
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
        method=_component(data.get("method"), "method", where, default="dkdm"),
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


def validate_against_registry(
    recipe: Recipe,
    registry: Any,
    flags: dict[str, str] | None = None,
    origins: Mapping[str, str] | None = None,
) -> Recipe:
    """The recipe with every component name checked and every option checked and converted against
    its entry's schema (the factory's signature: this imports the factories).

    Errors start with where the value came from: ``origins`` maps ``section.key`` to what gave it
    (``{"method.rho": "--set"}``), ``flags`` maps a kind to the command-line flag that named it
    (``{"students": "--student"}``); anything else comes from the recipe's file or name, if any.
    """
    where = recipe.source or recipe.name
    prefix = f"{where}: " if where else ""
    origins = origins or {}
    checked = {}
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
        if not entry.available:
            checked[kind] = comp  # its factory cannot be imported here: building it says what is missing
            continue
        options = {}
        for key, value in comp.options.items():
            origin = origins.get(f"{kind[:-1]}.{key}", where)
            options.update(entry.check_options({key: value}, where=origin or ""))
        checked[kind] = Component(comp.name, options)
    recipe = dataclasses.replace(
        recipe, teacher=checked["teachers"], student=checked["students"], method=checked["methods"]
    )
    return apply_train_defaults(recipe, registry)


def apply_train_defaults(recipe: Recipe, registry: Any) -> Recipe:
    """The recipe with the train settings its student and method declare (``register(...,
    train_defaults=...)``) filled in where nothing set them.

    Order, last wins: TrainConfig's defaults, the declared ones, then whatever the recipe, a flag
    or ``--set`` gave. The declared ones are the method's when it declares any, else the student's
    (for its preset): a student's describe how its architecture learns a denoiser (DKDM, synthetic,
    data), a one-step method's how its objective trains (another learning rate, no warmup), and
    the two do not mix.
    """
    # Start again from what was set: applying twice (a recipe resolved, then --student changed) must
    # not keep the first student's values. A record read from recipe.toml (keys set there) is kept.
    set_values = {key: getattr(recipe.train, key) for key in recipe.train_set}
    train = dataclasses.replace(TrainConfig(), **set_values)
    declared_by = {k: v for k, v in recipe.train_defaults.items() if k in recipe.train_set}
    method = registry.get("methods", recipe.method.name)
    if method.train_defaults:
        entry, preset = method, None
        who = f"method '{recipe.method.name}'"
    else:
        # every student factory takes preset=DEFAULT_STUDENT_PRESET (the hook's contract): no import
        entry = registry.get("students", recipe.student.name)
        preset = str(recipe.student.options.get("preset", DEFAULT_STUDENT_PRESET))
        who = f"student '{recipe.student.name}' (preset {preset})"
    values = {k: v for k, v in entry.train_defaults_for(preset).items() if k not in recipe.train_set}
    train = train_config(values, where=f"train defaults of {who}, plugin {entry.plugin}", base=train)
    declared_by.update(dict.fromkeys(values, who))
    return dataclasses.replace(recipe, train=train, train_defaults=declared_by)


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
                data = read_toml(file)
            except UserError as exc:
                problems.append(str(exc))
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
    return validate_against_registry(recipe, registry)
