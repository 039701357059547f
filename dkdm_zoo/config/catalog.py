"""The recipes plugins registered (``register_recipes``), found by name, and a recipe by name or path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dkdm_zoo.config.recipes import DEFAULT_METHOD, Recipe, load_recipe_file, read_toml
from dkdm_zoo.config.validation import validate_against_registry
from dkdm_zoo.errors import UserError


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
                method=section("method") or DEFAULT_METHOD,
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
