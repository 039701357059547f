"""Built-in teacher families, registered through the same hook a third-party plugin uses.

Factories are lazy ``"module:attr"`` strings so listing teachers never imports torch. ``accepts``
lists the pipeline / model class names (``_class_name`` in model_index.json or config.json) each
family loads, so ``--teacher PATH_OR_HUB_ID`` finds the family itself.
"""

from dkdm_zoo.registry.hookspecs import hookimpl
from dkdm_zoo.teachers.detect import RUN_MANIFEST

_LOADING = {"allow_pickle": False, "dtype": "float32", "local_files_only": None}


@hookimpl
def register_teachers(register):
    register(
        "ddpm-unet",
        "dkdm_zoo.teachers.ddpm_unet:load",
        summary="diffusers UNet2DModel + DDPM scheduler (hub id or local folder); eps/v/x0, fixed or learned variance",
        options={"path": None, "subfolder": None, "guidance_scale": None, **_LOADING},
        accepts=("DDPMPipeline", "DDIMPipeline", "UNet2DModel"),
    )
    register(
        "dit",
        "dkdm_zoo.teachers.dit:load",
        summary="diffusers DiTTransformer2DModel, class-conditional, learned sigma; latent (with its VAE) or pixel space",
        options={"path": None, "guidance_scale": 4.0, **_LOADING},
        accepts=("DiTPipeline", "DiTTransformer2DModel", "Transformer2DModel"),
    )
    register(
        "latent-sd",
        "dkdm_zoo.teachers.latent_sd:load",
        summary="Stable Diffusion-style latent teacher (UNet2DConditionModel + VAE + CLIP text) with CFG and a prompt list",
        options={"path": None, "prompts": None, "guidance_scale": 7.5, **_LOADING},
        requires=("transformers",),
        extra="sd",
        accepts=("StableDiffusionPipeline",),
    )
    register(
        "run",
        "dkdm_zoo.teachers.run:load",
        summary="a finished dkdm-zoo run directory (its trained student) as a teacher, for chained distillation",
        options={"path": None, "guidance_scale": None, "dtype": "float32"},
        accepts=(RUN_MANIFEST,),
    )
    register(
        "spec",
        "dkdm_zoo.teachers.spec_only:load",
        summary="no network, only a shape/schedule/conditioning spec: for `data` training on real images",
        options={
            "sample_shape": [1, 8, 8],
            "conditioning": "none",
            "num_classes": None,
            "num_train_timesteps": 1000,
            "beta_schedule": "linear",
            "beta_start": 1e-4,
            "beta_end": 0.02,
            "prediction_type": "epsilon",
            "variance_type": "fixed_small",
            "clip_sample": True,
        },
    )
    # Reference teachers trained on scikit-learn's 8x8 digits, shipped in dkdm_zoo/assets/ (see their MODEL_CARD.md).
    register(
        "digits-ddpm",
        "dkdm_zoo.teachers.reference:digits_ddpm",
        summary="reference: unconditional 8x8 digits UNet2DModel (DDPM, eps, T=1000), shipped; no download",
        options={"guidance_scale": None, "dtype": "float32"},
    )
    register(
        "digits-dit",
        "dkdm_zoo.teachers.reference:digits_dit",
        summary="reference: class-conditional 8x8 pixel-space digits DiT, learned variance, CFG; shipped",
        options={"guidance_scale": 3.0, "dtype": "float32"},
    )
