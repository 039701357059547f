"""Built-in student architectures, registered through the public hook (lazy factories)."""

from dkdm_zoo.registry.hookspecs import hookimpl


@hookimpl
def register_students(register):
    register(
        "unet",
        "dkdm_zoo.students.unet:build",
        summary="diffusers UNet2DModel / UNet2DConditionModel (text) with size presets",
        options={"preset": "small"},
    )
    register(
        "dit",
        "dkdm_zoo.students.dit:build",
        summary="Diffusion Transformer (timm blocks, adaLN-Zero), unconditional or class/text-conditional",
        options={"preset": "small"},
    )
    register(
        "convnext",
        "dkdm_zoo.students.convnext:build",
        summary="U-shaped network of timm ConvNeXt blocks with time and class conditioning",
        options={"preset": "small"},
    )
