"""sd3 / flux / sana on the command line, by folder, hub id from the HF cache (HF_HUB_OFFLINE=1) and
FAMILY@PATH: 2-step DKDM and SiD runs train, resume, sample with --prompt and export a pipeline that
plain diffusers loads and that samples what `dkdm-zoo sample` samples."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.registry import build_registry
from dkdm_zoo.testing.flow_hub_configs import FLUX_DEV, FLUX_SCHNELL, SANA_1600M, SD35_MEDIUM
from tests.conftest import strip_ansi

from .conftest import FAMILIES, REPO_SETTINGS, TEACHER_SETTINGS

FAST = [
    "--steps", "2", "--batch-size", "2", "--quiet",
    "--set", "train.preview_samples=2", "--set", "train.preview_steps=2",
    "--set", "train.checkpoint_every=1", "--set", "train.final_eval_samples=0",
]  # fmt: skip
DKDM = ["--set", "method.rho=0.001", "--set", "method.pool_init=ddim", "--set", "method.pool_init_steps=2"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(create_app(build_registry(entry_points=False)), list(args))
    return result.exit_code, strip_ansi(result.stdout), strip_ansi(result.stderr)


def teacher_arg(flow_hub, repo: str, way: str) -> str:
    return {
        "folder": str(flow_hub.folder[repo]),
        "hub id": repo,
        "FAMILY@hub id": f"{FAMILIES[repo]}@{repo}",
        "FAMILY@folder": f"{FAMILIES[repo]}@{flow_hub.folder[repo]}",
    }[way]


@pytest.mark.parametrize(
    ("repo", "way"),
    [
        (SD35_MEDIUM, "hub id"),
        (FLUX_SCHNELL, "FAMILY@folder"),
        (FLUX_DEV, "folder"),
        (SANA_1600M, "FAMILY@hub id"),
    ],
)
def test_dry_run_counts_every_network(flow_hub, offline_flow_cache, repo, way):
    source = teacher_arg(flow_hub, repo, way)
    args = ["distill", "--teacher", source, "--student", "unet", "--preset", "tiny", "--dry-run", "--json"]
    code, out, err = invoke(*args, *TEACHER_SETTINGS, *REPO_SETTINGS.get(repo, []))
    assert code == 0, err
    plan = json.loads(out)
    registry = build_registry(entry_points=False)
    teacher = registry.create(
        "teachers", FAMILIES[repo], path=str(flow_hub.folder[repo]), max_sequence_length=8,
        **({"resolution": 64} if repo in (FLUX_SCHNELL, FLUX_DEV) else {}),
    )  # fmt: skip
    every = sum(p.numel() for m in teacher.modules() for p in m.parameters())
    denoiser = sum(p.numel() for p in teacher.denoiser().parameters())
    assert plan["parameters"]["teacher"] == every > 2 * denoiser  # text encoders and VAE counted
    networks = plan["details"]["teacher networks"]
    for module in teacher.modules():  # each named (by the attribute holding it) with its own count
        assert f" {sum(p.numel() for p in module.parameters()):,}" in networks
    assert networks.count(" + ") == len(teacher.modules()) - 1
    if not way.startswith("FAMILY@"):
        assert f"teacher {source}: family '{FAMILIES[repo]}'" in err


def _export_matches_sample(run_dir) -> None:
    """The exported pipeline (plain diffusers) samples what the run's student samples with dkdm-zoo."""
    from diffusers import DiffusionPipeline

    import dkdm_zoo.pipelines  # noqa: F401  registers DKDMZooPipeline on diffusers
    from dkdm_zoo.runs import Run
    from dkdm_zoo.runs.student import load_student, original_teacher
    from dkdm_zoo.sampling.chain import sample_student

    registry = build_registry(entry_points=False)
    run = Run(run_dir)
    student, teacher = load_student(run, registry), original_teacher(run, registry)
    pipe = DiffusionPipeline.from_pretrained(run.pipeline_dir)
    noise = torch.randn((1, *teacher.spec.sample_shape), generator=torch.Generator().manual_seed(0))
    cond = teacher.make_condition(prompts=["a cat"])
    ours = sample_student(
        student, teacher.spec, teacher.schedule, noise, {"encoder_hidden_states": cond.text_embeds}, steps=2
    )
    theirs = pipe(
        prompt="a cat",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    torch.testing.assert_close(theirs.float(), ours, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("repo", "way", "method"),
    [(SD35_MEDIUM, "folder", "dkdm"), (FLUX_DEV, "hub id", "dkdm"), (SANA_1600M, "FAMILY@hub id", "dkdm"),
     (SD35_MEDIUM, "FAMILY@folder", "sid")],
)  # fmt: skip
def test_train_resume_sample_export(flow_hub, offline_flow_cache, tmp_path, repo, way, method):
    out = tmp_path / "run"
    source = teacher_arg(flow_hub, repo, way)
    args = ["distill", "--teacher", source, "--student", "unet", "--preset", "tiny", "--method", method]
    args += ["--out", str(out), *FAST, *(DKDM if method == "dkdm" else []), *TEACHER_SETTINGS]
    code, _, err = invoke(*args, *REPO_SETTINGS.get(repo, []))
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["teacher"]["name"] == FAMILIES[repo]
    assert manifest["teacher_spec"]["process"] == "flow"
    assert (out / "checkpoints" / "checkpoint-0000002").is_dir()
    code, _, err = invoke("distill", "--resume", "--out", str(out), "--steps", "3", "--quiet")
    assert code == 0, err
    assert "resuming from checkpoint-0000002 (step 2)" in err
    png = tmp_path / "grid.png"
    code, stdout, err = invoke(
        "sample", str(out), "--n", "2", "--steps", "2", "--prompt", "a cat", "--out", str(png)
    )
    assert code == 0, err
    size = json.loads((out / "run.json").read_text())["teacher_spec"]["image_shape"][1]
    assert re.search(rf"wrote 2 images to .*\({size}x{size} each\)", stdout), stdout
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "DKDMZooPipeline"
    assert (
        index["text_pipeline"]
        == {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline", "sana": "SanaPipeline"}[FAMILIES[repo]]
    )
    if method == "dkdm":
        _export_matches_sample(out)
