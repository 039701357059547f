"""The tree is the architecture: one folder per idea, no import cycles, each concept written once."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.architecture.imports import PACKAGE, cycles, import_graph, module_files, package_graph

ROOT_MODULES_ALLOWED = 4  # besides __init__.py / __main__.py: errors, spec, toolkit, pipelines
MAX_LINES = 400


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_packages():
    """The folders form layers: none imports a folder that imports it back (lazy imports included)."""
    assert cycles(package_graph(import_graph())) == []


def test_the_graph_sees_a_cycle(tmp_path):
    """The checks above can fail: a two-module package importing itself in a ring is reported."""
    package = tmp_path / "ring"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "x.py").write_text("def f():\n    from ring.b import y\n")
    (package / "b.py").write_text("from ring.a.x import f\n")
    graph = import_graph(package)
    assert cycles(graph) == [["ring.a.x", "ring.b"]]
    assert cycles(package_graph(graph)) == [["ring.a", "ring.b"]]


def test_the_package_root_holds_few_modules_and_no_module_is_two_ideas():
    root = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(root) <= ROOT_MODULES_ALLOWED, root
    long = {
        name: n for name, f in module_files().items() if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def _sources_matching(pattern: str) -> set[str]:
    regex = re.compile(pattern)
    return {name for name, f in module_files().items() if regex.search(f.read_text())}


def test_shared_concepts_have_one_owner():
    """Classifier-free guidance, latent decoding, progress bars and the distributed rank are each
    written in one module; everything else calls it."""
    assert _sources_matching(r"scale \* \(") == {"dkdm_zoo.sampling.guidance"}  # the CFG formula
    assert _sources_matching(r"vae\.decode\(") == {"dkdm_zoo.sampling.latents"}
    assert _sources_matching(r"from rich\.progress import .*Progress\b") == {"dkdm_zoo.sampling.progress"}
    assert _sources_matching(r"environ(\.get)?\(?\[?\"RANK\"") == {"dkdm_zoo.cli.common"}
    # the registry is the one list of methods: no module spells out the built-in method names together
    assert _sources_matching(r"\"boot\":\s*\"") == set()


def test_the_run_folder_and_config_import_no_torch():
    """``Run``, ``Manifest``, the writer and recipe resolution are torch-free: commands that only read a
    run folder or a recipe (and ``--help``) stay fast."""
    code = (
        "import sys\n"
        "import dkdm_zoo.runs.run, dkdm_zoo.runs.writer, dkdm_zoo.config.resolve, dkdm_zoo.config.resume\n"
        "import dkdm_zoo.export.card, dkdm_zoo.generation, dkdm_zoo.evaluation\n"
        "heavy = [m for m in ('torch', 'diffusers', 'accelerate') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


#: docs/architecture.md's layers, top to bottom: each folder imports only from folders listed before it
LAYERS = [
    ("errors", "spec", "dkdm_zoo"),
    ("registry",),
    ("diffusion", "datasets"),
    ("students",),
    ("runs",),
    ("sampling",),
    ("pipelines",),
    ("teachers",),
    ("methods",),
    ("config",),
    ("export", "generation"),
    ("evaluation",),
    ("engine",),
    ("testing",),
    ("cli", "toolkit", "scaffold"),
]


def test_folders_import_only_the_layers_above_them():
    rank = {
        f"dkdm_zoo.{name}" if name != "dkdm_zoo" else name: i
        for i, layer in enumerate(LAYERS)
        for name in layer
    }
    graph = package_graph(import_graph())
    assert set(graph) <= set(rank), (
        f"folders missing from LAYERS (and the architecture doc): {set(graph) - set(rank)}"
    )
    upward = sorted((a, b) for a, targets in graph.items() for b in targets if rank[b] > rank[a])
    assert upward == [], f"imports of a lower layer: {upward}"
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for layer in LAYERS:
        for name in layer:
            if name != "dkdm_zoo":
                assert f"`{name}" in doc, f"docs/architecture.md does not name the layer {name}"
