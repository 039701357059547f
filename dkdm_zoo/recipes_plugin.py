"""Registers the recipes that ship with dkdm-zoo, through the public ``register_recipes`` hook."""

from pathlib import Path

from dkdm_zoo.registry.hookspecs import hookimpl


def builtin_recipe_dir() -> Path:
    """Inside a wheel the recipes are packaged as ``dkdm_zoo/_recipes``; in a checkout they are ``recipes/``."""
    packaged = Path(__file__).parent / "_recipes"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "recipes"


@hookimpl
def register_recipes(register):
    register(builtin_recipe_dir())
