"""Built-in student architectures, registered through the public hook (lazy factories: no torch here).

The student contract and the shared helpers live in ``dkdm_zoo.students.base``; a student's options
are ``preset`` and the fields of its presets (typed by ``resolve_preset``).
"""

from dkdm_zoo.registry.hookspecs import hookimpl


@hookimpl
def register_students(register):
    register(
        "unet",
        "dkdm_zoo.students.unet:build",
        summary="diffusers UNet2DModel (unconditional/class) or UNet2DConditionModel (text); presets tiny/small/base",
    )
    register(
        "dit",
        "dkdm_zoo.students.dit:build",
        summary="Diffusion Transformer on timm blocks, adaLN-Zero: unconditional, class or text (cross-attention)",
    )
    register(
        "convnext",
        "dkdm_zoo.students.convnext:build",
        summary="U-Net of timm ConvNeXt blocks with FiLM time/class conditioning (no text)",
    )
