"""The U-ViT student ships as a separate package: installed like a user would, found via its entry point."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dkdm_zoo.students.base import example_inputs
from tests.conftest import REPO, cli_env
from tests.students.conftest import PLUGIN_DIR, TINY_SPECS
from tests.students.test_contract import check_fits_or_refuses


@pytest.mark.parametrize("family", list(TINY_SPECS))
def test_uvit_fits_every_family(family: str, uvit_registry):
    check_fits_or_refuses(uvit_registry, "uvit", family)


def test_uvit_round_trip_and_skips(uvit_registry, tmp_path):
    spec = TINY_SPECS["text-latent"]
    torch.manual_seed(0)
    model = uvit_registry.create("students", "uvit", spec, preset="tiny").eval()
    assert len(model.in_blocks) == len(model.out_blocks) == 1  # depth 3: shallow, mid, deep
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    inputs = example_inputs(spec, batch=2)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))
        # the text tokens matter
        other = dict(inputs, encoder_hidden_states=torch.randn_like(inputs["encoder_hidden_states"]))
        assert not torch.allclose(model(**other), model(**inputs))
    with pytest.raises(Exception, match="must be odd"):
        uvit_registry.create("students", "uvit", spec, preset="tiny", depth=4)


def test_uvit_smoothing_conv_starts_as_the_identity(uvit_registry):
    """At PyTorch's default init the 3x3 conv mixed every output pixel with its neighbours and DKDM sat at
    the loss of predicting zero for hundreds of steps; it starts as the identity instead."""
    model = uvit_registry.create("students", "uvit", TINY_SPECS["pixel-uncond"], preset="tiny")
    z = torch.randn(2, model.config.out_channels, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.final_layer(z), z)


def test_core_package_knows_nothing_of_the_plugin():
    core = [p for p in (REPO / "dkdm_zoo").rglob("*") if p.suffix in (".py", ".toml", ".cfg")]
    assert core and not [p for p in core if "dkdm_zoo_uvit" in p.read_text()]


def _install(target: Path) -> None:
    # Without hatchling in this environment pip builds in isolation (fetching hatchling from the index).
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        *isolation,
        "--target",
        str(target),
    ]
    done = subprocess.run([*cmd, str(PLUGIN_DIR)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


SNIPPET = """
import json, sys
import dkdm_zoo_uvit.plugin
assert "torch" not in sys.modules, "the plugin module must not import torch"
from dkdm_zoo.registry import build_registry
from dkdm_zoo.spec import TeacherSpec
from dkdm_zoo.students.base import example_inputs
registry = build_registry(strict=True)
spec = TeacherSpec(sample_shape=(1, 8, 8), conditioning="class", num_classes=3)
model = registry.create("students", "uvit", spec, preset="tiny")
out = model(**example_inputs(spec, batch=2))
info = next(p for p in registry.plugins if p.name == "uvit")
from dkdm_zoo.export.folder import save_pipeline
from dkdm_zoo.teachers.base import PipelineComponents
save_pipeline(model, spec, PipelineComponents(), "pipe")
# Load it as a user would: diffusers imports the student class from the config because an installed
# dkdm-zoo plugin provides it (forget the plugin's modules first: nothing of it is imported yet).
for name in [m for m in sys.modules if m.startswith("dkdm_zoo_uvit")]:
    del sys.modules[name]
import dkdm_zoo.pipelines
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("pipe")
images = pipe(class_labels=[0, 2], num_inference_steps=2, output_type="np").images
print(json.dumps({"shape": list(out.shape), "plugin": info.to_dict(), "module": type(model).__module__,
                  "images": list(images.shape), "loaded": type(pipe.student.model).__module__}))
"""


@pytest.mark.slow
def test_installed_plugin_is_listed_and_builds(tmp_path):
    target = tmp_path / "site"
    _install(target)
    assert (target / "dkdm_zoo_uvit" / "model.py").exists()
    dist_info = next(target.glob("dkdm_zoo_uvit-*.dist-info"))
    assert "uvit = dkdm_zoo_uvit.plugin" in (dist_info / "entry_points.txt").read_text()
    # the plugin's folder first, then this checkout's (and a worktree's PYTHONPATH), as a user's site would be
    env = cli_env(
        PYTHONPATH=os.pathsep.join(filter(None, [str(target), str(REPO), os.environ.get("PYTHONPATH")]))
    )

    if importlib.util.find_spec("dkdm_zoo.cli.app"):
        listed = subprocess.run(
            [sys.executable, "-m", "dkdm_zoo.cli.app", "list", "students", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert listed.returncode == 0, listed.stderr
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows["uvit"]["plugin"] == "uvit" and rows["uvit"]["available"]
        assert {"unet", "dit", "convnext"} <= set(rows)

    ran = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["shape"] == [2, 1, 8, 8]
    assert result["module"] == "dkdm_zoo_uvit.model"
    plugin = result["plugin"]
    assert plugin["ok"] and not plugin["builtin"] and plugin["version"] == "0.1.1"
    assert plugin["registered"] == {"students": ["uvit"]}
    assert result["images"] == [2, 8, 8, 1] and result["loaded"] == "dkdm_zoo_uvit.model"
