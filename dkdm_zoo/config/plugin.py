"""Registers the recipes that ship with dkdm-zoo, through the public ``register_recipes`` hook."""

from pathlib import Path

from dkdm_zoo.registry.hookspecs import hookimpl


def builtin_recipe_dir() -> Path:
    """Inside a wheel the recipes are packaged as ``dkdm_zoo/_recipes``; in a checkout they are ``recipes/``."""
    package = Path(__file__).resolve().parents[1]  # dkdm_zoo/
    packaged = package / "_recipes"
    return packaged if packaged.is_dir() else package.parent / "recipes"


@hookimpl
def register_recipes(register):
    register(builtin_recipe_dir())
