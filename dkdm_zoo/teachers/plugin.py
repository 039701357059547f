"""Built-in teacher families, registered through the same hook a third-party plugin uses.

Factories are lazy ``"module:attr"`` strings so listing teachers never imports torch. ``accepts``
lists the pipeline / model class names (``_class_name`` in model_index.json or config.json) each
family loads, so ``--teacher PATH_OR_HUB_ID`` finds the family itself. A family's options are its
factory's keyword parameters (annotations and defaults), read when they are needed.
"""

from dkdm_zoo.registry.hookspecs import hookimpl
from dkdm_zoo.teachers.detect import RUN_MANIFEST


@hookimpl
def register_teachers(register):
    register(
        "ddpm-unet",
        "dkdm_zoo.teachers.ddpm_unet:load",
        summary="diffusers UNet2DModel + DDPM scheduler (hub id or local folder); eps/v/x0, fixed or learned variance",
        accepts=("DDPMPipeline", "DDIMPipeline", "UNet2DModel"),
    )
    register(
        "dit",
        "dkdm_zoo.teachers.dit:load",
        summary="diffusers DiTTransformer2DModel, class-conditional, learned sigma; latent (with its VAE) or pixel space",
        accepts=("DiTPipeline", "DiTTransformer2DModel", "Transformer2DModel"),
    )
    register(
        "latent-sd",
        "dkdm_zoo.teachers.latent_sd:load",
        summary="Stable Diffusion-style latent teacher (UNet2DConditionModel + VAE + CLIP text) with CFG and a prompt list",
        requires=("transformers",),
        extra="sd",
        accepts=("StableDiffusionPipeline",),
    )
    # Flow-matching text-to-image families (transformers + their text encoders; `pip install 'dkdm-zoo[sd]'`).
    register(
        "sd3",
        "dkdm_zoo.teachers.sd3:load",
        summary="Stable Diffusion 3 / 3.5 (SD3Transformer2DModel, CLIP-L + CLIP-G + T5, rectified flow, real CFG)",
        requires=("transformers",),
        extra="sd",
        accepts=("StableDiffusion3Pipeline",),
    )
    register(
        "flux",
        "dkdm_zoo.teachers.flux:load",
        summary="FLUX.1 schnell / dev (FluxTransformer2DModel, packed latents, CLIP-L + T5; dev: embedded guidance)",
        requires=("transformers",),
        extra="sd",
        accepts=("FluxPipeline",),
    )
    register(
        "sana",
        "dkdm_zoo.teachers.sana:load",
        summary="SANA (SanaTransformer2DModel, Gemma-2 with its prompt template, DC-AE 32x, DPM-Solver flow schedule)",
        requires=("transformers",),
        extra="sd",
        accepts=("SanaPipeline",),
    )
    register(
        "sdxl",
        "dkdm_zoo.teachers.sdxl:load",
        summary="Stable Diffusion XL (text_time UNet, two CLIP encoders, pooled embeds + time ids) with CFG and prompts",
        requires=("transformers",),
        extra="sd",
        accepts=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    )
    register(
        "pixart",
        "dkdm_zoo.teachers.pixart:load",
        summary="PixArt-α / Σ (PixArtTransformer2DModel, T5 text with its mask, learned sigma) with CFG and prompts",
        requires=("transformers",),
        extra="sd",
        accepts=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
    )
    register(
        "run",
        "dkdm_zoo.teachers.run:load",
        summary="a finished dkdm-zoo run directory (its trained student) as a teacher, for chained distillation",
        accepts=(RUN_MANIFEST,),
    )
    register(
        "spec",
        "dkdm_zoo.teachers.spec_only:load",
        summary="no network, only a shape/schedule/conditioning spec: for `data` training on real images",
    )
    # Reference teachers trained on scikit-learn's 8x8 digits, shipped in dkdm_zoo/assets/ (see their MODEL_CARD.md).
    register(
        "digits-ddpm",
        "dkdm_zoo.teachers.reference:digits_ddpm",
        summary="reference: unconditional 8x8 digits UNet2DModel (DDPM, eps, T=1000), shipped; no download",
    )
    register(
        "digits-flow",
        "dkdm_zoo.teachers.reference:digits_flow",
        summary="reference: unconditional 8x8 digits rectified-flow UNet2DModel (velocity, FlowMatchEuler), shipped",
    )
    register(
        "digits-dit",
        "dkdm_zoo.teachers.reference:digits_dit",
        summary="reference: class-conditional 8x8 pixel-space digits DiT, learned variance, CFG; shipped",
    )
