"""SD 2.1, SDXL and PixArt-α/Σ as teachers, on narrow copies written by the real pipeline classes:
each samples exactly what its diffusers pipeline samples for the same noise and prompts; each loads
by folder, by hub id from the cache and as FAMILY@hub id; runs train, resume, sample and export."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from dkdm_zoo.errors import UserError  # noqa: E402
from dkdm_zoo.registry import build_registry  # noqa: E402
from dkdm_zoo.testing.sdxl_fixtures import (  # noqa: E402
    BUILDERS,
    PIXART_ALPHA,
    PIXART_SIGMA,
    SD2_1,
    SDXL_BASE,
)

from .test_commands import invoke  # noqa: E402

FAMILIES = {SD2_1: "latent-sd", SDXL_BASE: "sdxl", PIXART_ALPHA: "pixart", PIXART_SIGMA: "pixart"}
PROMPTS = ["A cat sitting on a chair", "a red fox in the snow"]
PROMPT_SET = '--set=teacher.prompts=["a cat sitting on a chair", "a red fox in the snow"]'


def teacher(folder, family: str, **options):
    return build_registry(entry_points=False).create("teachers", family, path=str(folder), **options)


def ddim_like_ours(folder, **extra) -> DDIMScheduler:
    """diffusers' DDIM on the teacher's schedule with dkdm-zoo's sampler settings: trailing timesteps,
    alpha_bar = 1 after the last step, no clipping."""
    return DDIMScheduler.from_pretrained(
        folder,
        subfolder="scheduler",
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
        **extra,
    )


def reference_pipeline(repo: str, t, folder, **scheduler):
    sched = ddim_like_ours(folder, **scheduler)
    if repo == SD2_1:
        return StableDiffusionPipeline(
            vae=t.vae,
            text_encoder=t.text_encoder,
            tokenizer=t.tokenizer,
            unet=t.unet,
            scheduler=sched,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        ), {}
    if repo == SDXL_BASE:
        return StableDiffusionXLPipeline(
            vae=t.vae,
            text_encoder=t.text_encoder,
            text_encoder_2=t.text_encoder_2,
            tokenizer=t.tokenizer,
            tokenizer_2=t.tokenizer_2,
            unet=t.unet,
            scheduler=sched,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        ), {}
    cls = PixArtSigmaPipeline if repo == PIXART_SIGMA else PixArtAlphaPipeline
    if repo == PIXART_ALPHA:  # PixArtAlphaPipeline keys its micro-conditions on sample_size 128 (1024 px)
        t.transformer.register_to_config(sample_size=128)
    pipe = cls(
        vae=t.vae,
        text_encoder=t.text_encoder,
        tokenizer=t.tokenizer,
        transformer=t.transformer,
        scheduler=sched,
    )
    h = t.spec.image_shape[1]
    return pipe, {
        "height": h,
        "width": h,
        "use_resolution_binning": False,
        "clean_caption": False,
        "max_sequence_length": t.max_sequence_length,
    }


@pytest.mark.parametrize("repo", list(BUILDERS))
def test_the_teacher_samples_what_its_diffusers_pipeline_samples(modern, repo):
    torch.manual_seed(0)
    folder = modern.folder[repo]
    t = teacher(folder, FAMILIES[repo])
    noise = torch.randn(2, *t.spec.sample_shape, generator=torch.Generator().manual_seed(1))
    ours = t.sample(2, steps=2, cond=t.make_condition(prompts=PROMPTS), noise=noise, guidance_scale=3.0)
    pipe, kwargs = reference_pipeline(repo, t, folder)
    ref = pipe(
        PROMPTS,
        num_inference_steps=2,
        guidance_scale=3.0,
        latents=noise.clone(),
        output_type="latent",
        **kwargs,
    ).images
    assert ref.abs().max() > 0.1
    assert ((ours - ref).abs().max() / ref.abs().max()) < 1e-4
    assert t.decode(ours).shape == (2, *t.spec.image_shape)


def test_an_sdxl_teacher_at_another_resolution_samples_what_the_pipeline_samples_at_that_size(modern):
    """``resolution`` (SDXL-Turbo trains at 512 px): the latents, the time ids' original and target sizes
    and the samples are StableDiffusionXLPipeline's at height = width = resolution."""
    folder = modern.folder[SDXL_BASE]
    native = teacher(folder, "sdxl")
    t = teacher(folder, "sdxl", resolution=32)
    assert native.spec.image_shape[1] == 64 and t.spec.image_shape == (3, 32, 32)
    assert t.spec.sample_shape == (4, 4, 4)
    assert t.add_time_ids.tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    noise = torch.randn(2, *t.spec.sample_shape, generator=torch.Generator().manual_seed(1))
    ours = t.sample(2, steps=2, cond=t.make_condition(prompts=PROMPTS), noise=noise, guidance_scale=3.0)
    pipe, _ = reference_pipeline(SDXL_BASE, t, folder)
    ref = pipe(
        PROMPTS, num_inference_steps=2, guidance_scale=3.0, latents=noise.clone(), output_type="latent",
        height=32, width=32,
    ).images  # fmt: skip
    assert ref.shape == ours.shape and ((ours - ref).abs().max() / ref.abs().max()) < 1e-4
    with pytest.raises(UserError, match=r"sdxl: resolution = 48 is not a positive multiple of 32 pixels"):
        teacher(folder, "sdxl", resolution=48)


def test_sd21_is_v_prediction_with_openclip_h_states(modern):
    t = teacher(modern.folder[SD2_1], "latent-sd")
    assert t.spec.prediction_type == "v_prediction" and t.spec.family == "latent-sd"
    assert t.spec.text_embed_dim == t.text_encoder.config.hidden_size == t.unet.config.cross_attention_dim


def test_a_zero_snr_trailing_fine_tune_is_read_recorded_and_sampled_as_diffusers_does(modern, tmp_path):
    folder = tmp_path / "zsnr"
    shutil.copytree(modern.folder[SD2_1], folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(
        json.dumps(
            {**json.loads(path.read_text()), "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
        )
    )
    t = teacher(folder, "latent-sd")
    schedule = t.spec.schedule
    assert schedule["rescale_betas_zero_snr"] is True and schedule["timestep_spacing"] == "trailing"
    reference = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    ours = t.schedule.alphas_cumprod
    assert torch.allclose(ours[:-1], reference.alphas_cumprod[:-1].double(), rtol=1e-5)
    assert (
        reference.alphas_cumprod[-1] == 0 and abs(ours[-1] / 2.0**-24 - 1) < 1e-6
    )  # Euler's floor (float32 betas)
    noise = torch.randn(2, *t.spec.sample_shape, generator=torch.Generator().manual_seed(1))
    cond = t.make_condition(prompts=PROMPTS)
    mine = t.sample(2, steps=3, cond=cond, noise=noise, guidance_scale=3.0)
    pipe, _ = reference_pipeline(SD2_1, t, folder)
    ref = pipe(
        PROMPTS, num_inference_steps=3, guidance_scale=3.0, latents=noise.clone(), output_type="latent"
    ).images
    assert ((mine - ref).abs().max() / ref.abs().max()) < 2e-3  # the floor at t = T-1 is the only difference


def test_sdxl_conditions_carry_pooled_projection_and_the_time_ids_a_user_sets(modern):
    t = teacher(
        modern.folder[SDXL_BASE],
        "sdxl",
        original_size=[96, 80],
        crops_coords_top_left=[4, 2],
        prompts=["a cat sitting on a chair"],
    )
    cond = t.make_condition(prompts=PROMPTS)
    assert cond.text_embeds.shape == (2, 77, t.unet.config.cross_attention_dim)
    assert cond.extras["text_embeds"].shape == (2, t.text_encoder_2.config.projection_dim)
    assert cond.extras["time_ids"].tolist() == [[96, 80, 4, 2, 64, 64]] * 2  # target: the native size
    null = t.conditions_from_refs(__import__("numpy").array([t.null_ref(), 0]))
    assert null.text_embeds[0].abs().max() == 0 and null.extras["text_embeds"][0].abs().max() == 0
    assert torch.equal(
        null.text_embeds[1], t.make_condition(prompts=["a cat sitting on a chair"]).text_embeds[0]
    )
    with pytest.raises(UserError, match=r"original_size = \[1\] is not two integers"):
        teacher(modern.folder[SDXL_BASE], "sdxl", original_size=[1])


def test_an_sdxl_float16_teacher_keeps_its_vae_in_float32_as_force_upcast_says(modern):
    t = teacher(modern.folder[SDXL_BASE], "sdxl", dtype="float16")
    assert t.unet.dtype == torch.float16 and t.vae.dtype == torch.float32


def test_an_sdxl_refiner_is_refused_in_one_line(modern, tmp_path):
    folder = tmp_path / "refiner"
    shutil.copytree(modern.folder[SDXL_BASE], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    code, _, err = invoke("distill", "--teacher", str(folder), "--student", "unet", "--dry-run", PROMPT_SET)
    assert code == 2 and "is an SDXL refiner" in err and len(err.strip().splitlines()) <= 2, err


def test_pixart_conditions_use_the_pipelines_length_and_mask(modern):
    sigma, alpha = (
        teacher(modern.folder[PIXART_SIGMA], "pixart"),
        teacher(modern.folder[PIXART_ALPHA], "pixart"),
    )
    assert (sigma.spec.text_seq_len, alpha.spec.text_seq_len) == (300, 120)
    assert sigma.spec.variance_type == "learned_range" and sigma.spec.out_channels == 8
    cond = sigma.make_condition(prompts=PROMPTS)
    mask = cond.extras["encoder_attention_mask"]
    assert mask.shape == (2, 300) and 0 < int(mask[0].sum()) < 300
    assert sigma.vae.config.scaling_factor == 0.13025 and alpha.vae.config.scaling_factor == 0.18215


WAYS = ("folder", "hub id", "FAMILY@hub id")


@pytest.mark.parametrize(("repo", "way"), [(r, w) for r in BUILDERS for w in WAYS])
def test_every_way_of_naming_the_teacher_dry_runs(modern, modern_cache, repo, way):
    source = {
        "folder": str(modern.folder[repo]),
        "hub id": repo,
        "FAMILY@hub id": f"{FAMILIES[repo]}@{repo}",
    }[way]
    code, out, err = invoke(
        "distill", "--teacher", source, "--student", "unet", "--preset", "tiny", "--dry-run", PROMPT_SET
    )
    assert code == 0, err
    assert re.search(rf"^teacher  {FAMILIES[repo]}  [\d,]+ parameters", out, re.M), out
    # the plan counts each encoder, the VAE and the denoiser, and the encoded-prompt cache
    networks = r"unet [\d,]+ \+ vae [\d,]+ \+ text_encoder [\d,]+"
    networks += r" \+\s+text_encoder_2 [\d,]+" if repo == SDXL_BASE else ""
    if FAMILIES[repo] == "pixart":
        networks = r"transformer [\d,]+ \+ vae [\d,]+ \+ text_encoder [\d,]+"
    assert re.search(rf"teacher networks = {networks}", out), out
    assert re.search(r"^\s+method state: teacher condition cache\s+[\d.]+\s+[\d.]+$", out, re.M), out


TRAIN = [
    "--preset",
    "tiny",
    "--batch-size",
    "2",
    "--quiet",
    "--set",
    "train.preview_samples=2",
    "--set",
    "train.preview_steps=2",
    "--set",
    "train.checkpoint_every=1",
    "--set",
    "train.final_eval_samples=0",
    PROMPT_SET,
]
DKDM = ["--set", "method.rho=0.001", "--set", "method.pool_init=ddim", "--set", "method.pool_init_steps=2"]


@pytest.mark.parametrize(
    ("repo", "method"),
    [(SD2_1, "dkdm"), (SDXL_BASE, "dkdm"), (SDXL_BASE, "sid"), (PIXART_SIGMA, "dkdm"), (PIXART_SIGMA, "sid")],
)
def test_two_steps_train_resume_sample_and_export(modern, tmp_path, repo, method):
    from diffusers import DiffusionPipeline

    import dkdm_zoo.pipelines  # noqa: F401 - registers DKDMZooPipeline on diffusers

    out = tmp_path / "run"
    args = [
        "distill",
        "--teacher",
        str(modern.folder[repo]),
        "--student",
        "unet",
        "--method",
        method,
        "--out",
        str(out),
        *TRAIN,
        *(DKDM if method == "dkdm" else []),
    ]
    code, _, err = invoke(*args, "--steps", "2")
    assert code == 0, err
    code, _, err = invoke(*args, "--steps", "3", "--resume")
    assert code == 0 and "resuming from checkpoint-0000002" in err, err
    manifest = json.loads((out / "run.json").read_text())
    assert (
        manifest["teacher"]["name"] == FAMILIES[repo] and manifest["teacher_spec"]["family"] == FAMILIES[repo]
    )
    png = tmp_path / "s.png"
    code, _, err = invoke(
        "sample", str(out), "--n", "2", "--steps", "2", "--prompt", "a cat", "--out", str(png)
    )
    assert code == 0 and png.is_file(), err
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    pipe = DiffusionPipeline.from_pretrained(out / "pipeline")
    image = pipe(
        prompt=["a cat", "a dog"],
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (2, 64, 64, 3) and bool((image >= 0).all() and (image <= 1).all())
    if repo == SD2_1:  # a UNet student of a one-encoder SD teacher: the stock pipeline
        assert index["_class_name"] == "StableDiffusionPipeline"
    else:  # the package's pipeline, encoding prompts as the teacher does
        assert index["_class_name"] == "DKDMZooPipeline"
        assert index["text_encoding"] == ("sdxl" if repo == SDXL_BASE else "t5")


@pytest.mark.parametrize(
    ("recipe", "family"),
    [("sdxl-to-one-step-sid", "sdxl"), ("sdxl-to-bk-dkdm", "sdxl"), ("pixart-sigma-to-student", "pixart")],
)
def test_the_recipes_dry_run_from_the_cache(modern, modern_cache, recipe, family):
    code, out, err = invoke("distill", "--recipe", recipe, "--dry-run")
    assert code == 0, err
    assert re.search(rf"^teacher  {family}  [\d,]+ parameters", out, re.M), out


def test_the_sdxl_bk_recipe_trains_a_pruned_unet_that_loads_in_the_sdxl_pipeline(
    modern, modern_cache, tmp_path
):
    """The recipe's bk-small student on SDXL's real block counts (2 resnet+attention pairs per down stage):
    one pair fewer per stage, no mid-block, every kept tensor the teacher's; 2 DKDM steps with BK-SDM's
    feature loss; the export is SDXL's own pipeline with the pruned UNet."""
    from safetensors.torch import load_file

    out = tmp_path / "bk"
    code, _, err = invoke(
        "distill", "--recipe", "sdxl-to-bk-dkdm", "--out", str(out), "--steps", "2", "--batch-size", "1",
        "--quiet", *TRAIN[TRAIN.index("--set"):], *DKDM, "--set", "train.mixed_precision=no",
        "--set", "train.teacher_dtype=float32", "--set", "teacher.dtype=float32",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    record = manifest["student_init"] if "student_init" in manifest else manifest["student"]
    text = json.dumps(record)
    assert '"bk-small"' in text and '"mid_block": true' in text, text
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    feature = [m["feature_mse"] for m in metrics if "feature_mse" in m]
    assert feature and all(v > 0 for v in feature), "BK-SDM's feature loss was not in the objective"
    pipe = StableDiffusionXLPipeline.from_pretrained(out / "pipeline")
    teacher_unet = json.loads((modern.folder[SDXL_BASE] / "unet" / "config.json").read_text())
    assert teacher_unet["layers_per_block"] == 2 and teacher_unet["mid_block_type"] is not None
    assert pipe.unet.config.layers_per_block == 1 and pipe.unet.mid_block is None
    teacher_weights = load_file(modern.folder[SDXL_BASE] / "unet" / "diffusion_pytorch_model.safetensors")
    student_params = sum(p.numel() for p in pipe.unet.parameters())
    assert student_params < sum(v.numel() for v in teacher_weights.values())
    image = pipe(
        prompt="a cat", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert image.shape[0] == 1 and bool((image >= 0).all() and (image <= 1).all())


@pytest.mark.parametrize("repo", [SDXL_BASE, PIXART_SIGMA])
def test_a_copy_of_the_denoiser_evaluates_with_the_familys_own_conditions(modern, repo):
    import copy

    t = teacher(modern.folder[repo], FAMILIES[repo])
    cond = t.make_condition(prompts=PROMPTS)
    x, steps = torch.randn(2, *t.spec.sample_shape), torch.tensor([10, 900])
    clone = copy.deepcopy(t.denoiser()).requires_grad_(True)
    view = t.with_denoiser(clone)
    assert view.denoiser() is clone and t.denoiser() is not clone
    assert torch.equal(view.model_output(x, steps, cond), t.model_output(x, steps, cond))
    view.denoise(x, steps, cond, guidance_scale=2.0).x0.sum().backward()
    assert all(p.grad is not None for p in clone.parameters() if p.requires_grad)
