"""Plugin hooks, the safe entry-point loader and the typed registry."""

from dkdm_zoo.registry.hookspecs import hookimpl
from dkdm_zoo.registry.loader import PluginSource, build_registry, make_plugin_manager
from dkdm_zoo.registry.registry import Entry, PluginInfo, Registry

__all__ = [
    "Entry",
    "PluginInfo",
    "PluginSource",
    "Registry",
    "build_registry",
    "hookimpl",
    "make_plugin_manager",
]
