"""Students made from an sdxl / pixart / sd3 / flux / sana teacher's own network go into the TEACHER's
own diffusers pipeline class: 2-step runs on narrow copies written by the real pipelines export, the
stock class loads them and, called as the card says, samples the latents `dkdm-zoo sample` samples;
a LoRA student is exported as its adapters alone, which load on the teacher's own pipeline and give
the images of the merged pipeline `dkdm-zoo export --merge` writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusers
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from dkdm_zoo.cli.app import create_app
from dkdm_zoo.export.stock import call_arguments
from dkdm_zoo.registry import build_registry
from dkdm_zoo.runs import Run
from dkdm_zoo.testing.flow_hub_fixtures import build_flux_dev, build_sana_1600m, build_sd35_medium
from dkdm_zoo.testing.sdxl_fixtures import build_pixart, build_sdxl
from tests.conftest import strip_ansi

torch.set_num_threads(1)

BUILD = {
    "sdxl": build_sdxl,
    "pixart": build_pixart,  # PixArt-Σ
    "sd3": build_sd35_medium,
    "flux": build_flux_dev,  # dev: its guidance is an input, the card must pass the teacher's
    "sana": build_sana_1600m,
}
KIND = {
    "sdxl": "StableDiffusionXLPipeline",
    "pixart": "PixArtSigmaPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "sana": "SanaPipeline",
}
PROMPTS = '--set=teacher.prompts=["a cat sitting on a chair", "a red fox in the snow"]'
SETTINGS = {
    "sdxl": [],
    "pixart": ["--set=teacher.max_sequence_length=8"],
    "sd3": ["--set=teacher.max_sequence_length=8"],
    "flux": ["--set=teacher.max_sequence_length=8", "--set=teacher.resolution=64", "--set=teacher.guidance_scale=2.5"],
    "sana": ["--set=teacher.max_sequence_length=8"],
}  # fmt: skip
FAST = [
    "--steps", "2", "--batch-size", "2", "--quiet", "--set", "train.preview_every=0",
    "--set", "train.final_eval_samples=0", "--set", "train.lr=0.01",
]  # fmt: skip
DKDM = ["--set", "method.rho=0.001", "--set", "method.pool_init=ddim", "--set", "method.pool_init_steps=1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stock-teachers")
    folders = {family: build(root / family) for family, build in BUILD.items()}
    # SDXL's own two resnets per stage (the narrow copy has one) for the BK-SDM presets
    deep = root / "sdxl-deep"
    shutil.copytree(folders["sdxl"], deep)
    config = json.loads((deep / "unet/config.json").read_text())
    torch.manual_seed(0)
    UNet2DConditionModel.from_config({**config, "layers_per_block": 2}).save_pretrained(deep / "unet")
    return {**folders, "sdxl-deep": deep}


def distill(folder: Path, family: str, out: Path, *extra: str) -> None:
    family = family.removesuffix("-deep")
    args = ["distill", "--teacher", str(folder), "--student", "teacher", "--out", str(out), PROMPTS]
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)), [*args, *SETTINGS[family], *FAST, *extra]
    )
    assert result.exit_code == 0, strip_ansi(result.output)


def card_arguments(run: Path) -> dict:
    """What the card's snippet passes (checked to be in the card), in the run's terms."""
    run_ = Run(run)
    folder = run_.pipeline_dir
    index = folder / ("model_index.json" if (folder / "model_index.json").is_file() else "lora_pipeline.json")
    kind = json.loads(index.read_text())["_class_name"]
    times = None
    if run_.manifest.one_step:
        config = json.loads((run_.student_dir / "config.json").read_text())
        times = config.get("step_timesteps") or [config["timestep"]]
    args = call_arguments(kind, folder, run_.manifest.teacher_spec, run_.manifest.teacher_options, times)
    card = (folder / "README.md").read_text()
    assert f"from diffusers import {kind}" in card and f"pipe = {kind}.from_pretrained(" in card
    assert ", ".join(f"{k}={v!r}" for k, v in args.items()) in card
    return args


def stock_latents(pipe, args: dict, steps: int | None, seed: int = 0) -> torch.Tensor:
    """The stock pipeline called as the card says (``steps`` instead of its 50), latents out."""
    call = {
        **args,
        "prompt": "a cat",
        "output_type": "latent",
        "generator": torch.Generator().manual_seed(seed),
    }
    if steps is not None and "num_inference_steps" in call:
        call["num_inference_steps"] = steps
    latents = pipe(**call).images
    if isinstance(pipe, diffusers.FluxPipeline):  # packed 2x2 tokens
        size, factor = args["height"], pipe.vae_scale_factor
        latents = diffusers.FluxPipeline._unpack_latents(latents, size, size, factor)
    return latents.float()


def dkdm_latents(run: Path, steps: int, seed: int = 0) -> torch.Tensor:
    """What `dkdm-zoo sample RUN` samples for the prompt, before decoding (its noise from ``seed``)."""
    from dkdm_zoo.generation.sources import load_source
    from dkdm_zoo.sampling.chain import sample_student
    from dkdm_zoo.students.base import takes_condition_extras

    source = load_source(str(run), build_registry(entry_points=False))
    noise = torch.randn((1, *source.spec.sample_shape), generator=torch.Generator().manual_seed(seed))
    cond = source.conditioner.make_condition(prompts=["a cat"])
    if source.one_step:
        kwargs = cond.model_kwargs(extras=takes_condition_extras(source.generator))
        return sample_student(source.generator, source.spec, source.conditioner.schedule, noise, kwargs)
    return source.teacher.sample(1, steps=steps, cond=cond, noise=noise).float()


@pytest.mark.parametrize(
    ("family", "preset"),
    [
        ("sdxl", "full"),
        ("sdxl-deep", "bk-small"),
        ("pixart", "half"),
        ("sd3", "full"),
        ("flux", "half"),
        ("sana", "full"),
    ],
)
def test_a_teacher_student_is_the_teachers_pipeline_and_samples_as_dkdm_zoo(
    folders, tmp_path, family, preset
):
    run = tmp_path / "run"
    distill(folders[family], family, run, "--preset", preset, *DKDM)
    kind = KIND[family.removesuffix("-deep")]
    assert json.loads((run / "pipeline/model_index.json").read_text())["_class_name"] == kind
    args = card_arguments(run)
    assert args["guidance_scale"] == (2.5 if family == "flux" else 1.0)  # FLUX-dev's guidance is an input
    pipe = getattr(diffusers, kind).from_pretrained(run / "pipeline")
    if family.startswith("sdxl"):  # DPM-Solver++(1) is DDIM: dkdm-zoo's chain for any step count
        assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    for steps in (2, 3):
        torch.testing.assert_close(
            stock_latents(pipe, args, steps), dkdm_latents(run, steps), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_a_lora_is_exported_as_adapters_that_load_on_the_teachers_pipeline_as_the_merged_export(
    folders, tmp_path, family
):
    run = tmp_path / "run"
    # alpha 4 on rank 2 (scale 2): the adapters carry their alpha, not diffusers' default alpha = rank
    distill(folders[family], family, run, "--lora", "2", "--set", "student.lora_alpha=4", *DKDM)
    kind = KIND[family]
    cls = getattr(diffusers, kind)
    adapters = run / "pipeline"  # the end-of-run export: the adapters, their scheduler and the card
    assert not (adapters / "model_index.json").exists()
    assert [p.name for p in adapters.rglob("*.safetensors")] == ["pytorch_lora_weights.safetensors"]
    lora = load_file(str(adapters / "pytorch_lora_weights.safetensors"))
    assert lora and all("lora_" in k for k in lora)  # no full network weights
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)  # trained: lora_B starts at 0
    args = card_arguments(run)
    card = (adapters / "README.md").read_text()
    assert 'pipe.load_lora_weights("' in card and 'subfolder="scheduler"' in card

    merged_folder = tmp_path / "merged"
    result = CliRunner().invoke(
        create_app(build_registry(entry_points=False)), ["export", str(run), str(merged_folder), "--merge"]
    )
    assert result.exit_code == 0, strip_ansi(result.output)
    merged_pipe = cls.from_pretrained(merged_folder)
    merged = stock_latents(merged_pipe, args, 2)
    adapted = cls.from_pretrained(folders[family])  # the teacher's own pipeline, as the card loads it
    adapted.scheduler = type(merged_pipe.scheduler).from_pretrained(adapters, subfolder="scheduler")
    teacher = stock_latents(adapted, args, 2)
    adapted.load_lora_weights(adapters)
    torch.testing.assert_close(stock_latents(adapted, args, 2), merged, atol=1e-4, rtol=1e-4)
    assert (teacher - merged).abs().max() > 1e-6  # and they change the samples
    # --merge also keeps the adapters beside the merged weights, the same tensors
    beside = load_file(str(merged_folder / "lora/pytorch_lora_weights.safetensors"))
    assert beside.keys() == lora.keys() and all(torch.equal(beside[k], lora[k]) for k in lora)


SID = ["--method", "sid", "--set", "method.fake_score_steps=1"]


@pytest.mark.parametrize(
    ("family", "extra", "kind"),
    [
        # a flow generator at s = 1 whose output is the velocity: one FlowMatchEuler step, x0 = z - v
        ("flux", ["--set", "method.generator_timesteps=[1000.0]"], "FluxPipeline"),
        # a VP eps generator at its timestep t: one Euler step from sigma_t ("trailing": input sqrt(1 - abar) z)
        ("sdxl", [], "StableDiffusionXLPipeline"),
        # two steps re-noise with fresh noise, which no stock scheduler draws from the pipeline's generator
        ("sd3", ["--set", "method.generator_steps=2"], "DKDMZooPipeline"),
    ],
)
def test_a_one_step_generator_goes_to_the_stock_pipeline_only_where_it_makes_its_call(
    folders, tmp_path, family, extra, kind
):
    run = tmp_path / "run"
    distill(folders[family], family, run, *SID, *extra)
    assert json.loads((run / "pipeline/model_index.json").read_text())["_class_name"] == kind
    if kind == "DKDMZooPipeline":
        return
    args = card_arguments(run)
    pipe = getattr(diffusers, kind).from_pretrained(run / "pipeline")
    torch.testing.assert_close(stock_latents(pipe, args, None), dkdm_latents(run, 1), atol=1e-4, rtol=1e-4)
    assert "one-step" in (run / "pipeline/README.md").read_text()


def test_what_the_stock_schedulers_do_not_read_is_refused_and_clipping_stays_ours():
    from dkdm_zoo.errors import UserError
    from dkdm_zoo.export.stock import stock_kind, stock_scheduler
    from dkdm_zoo.spec import TeacherSpec
    from dkdm_zoo.students.teacher_net import TeacherNetwork
    from dkdm_zoo.teachers.base import PipelineComponents

    text = {"conditioning": "text", "text_embed_dim": 8, "space": "latent", "family": "sdxl"}
    odd = TeacherSpec((4, 8, 8), schedule={"beta_schedule": "linear", "variance_scale": 2.0}, **text)
    with pytest.raises(UserError, match=r"unknown keys \['variance_scale'\]"):
        stock_scheduler(odd, "epsilon")
    # a scratch student, a teacher folder of another pipeline class, a clipping schedule: not the stock class
    components = PipelineComponents(pipeline_class="StableDiffusionXLPipeline")
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8,), down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
        layers_per_block=1, cross_attention_dim=8, norm_num_groups=4,
    )  # fmt: skip
    spec = TeacherSpec((4, 8, 8), **text)
    student = TeacherNetwork.around(unet, spec, "epsilon")
    assert stock_kind(student, spec, components) == "StableDiffusionXLPipeline"
    assert stock_kind(student, spec, PipelineComponents()) is None  # the teacher names no SDXL pipeline
    assert stock_kind(unet, spec, components) is None  # a scratch student
    clipping = TeacherSpec((4, 8, 8), clip_sample=True, **text)  # the stock loops do not clip x0
    assert stock_kind(TeacherNetwork.around(unet, clipping, "epsilon"), clipping, components) is None
