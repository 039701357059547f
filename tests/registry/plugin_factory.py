"""Builds real, importable third-party plugin distributions on disk for tests (dist-info + entry point)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_plugin_dist(root: Path, dist_name: str, module: str, source: str, version: str = "0.1.0") -> Path:
    """Write ``module.py`` and a ``dist-info`` with a ``dkdm_zoo`` entry point into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[dkdm_zoo]\n{dist_name} = {module}\n")
    return root


GOOD = """
from dkdm_zoo.registry import hookimpl

def build(spec, preset="small", width=8):
    return ("built", spec, preset, width)

@hookimpl
def register_students(register):
    register("toy-mixer", build, summary="a toy student from a third-party plugin")

@hookimpl
def register_methods(register):
    register("toy-method", "toy_good_plugin:build", summary="lazy factory")
"""

IMPORT_ERROR = """
import this_module_does_not_exist_anywhere
"""

DUPLICATE = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def register_students(register):
    register("unet", "x:y", summary="tries to replace the built-in unet")
"""

MISSPELLED = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def register_student(register):  # typo: the spec is register_students
    register("never", "x:y")
"""

EXITS_AT_IMPORT = """
import sys

sys.exit("this plugin calls sys.exit at import")
"""

EXITS_WHILE_REGISTERING = """
from dkdm_zoo.registry import hookimpl

@hookimpl
def register_students(register):
    register("exit-student", "x:y")
    raise SystemExit(3)
"""

SLOW = """
import time

from dkdm_zoo.registry import hookimpl

time.sleep(0.6)  # a heavy import at module level: every command pays it

@hookimpl
def register_methods(register):
    register("slow-method", "x:y", summary="slow to import")
"""
