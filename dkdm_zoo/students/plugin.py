"""Built-in student architectures, registered through the public hook (lazy factories: no torch here).

The student contract and the shared helpers live in ``dkdm_zoo.students.base``; a student's options
are ``preset`` and the fields of its presets (typed by ``resolve_preset``).
"""

from dkdm_zoo.registry.hookspecs import hookimpl

# Train settings each student declares (used where a recipe or flag sets none; `dkdm-zoo info`).
# tiny/small: measured with DKDM on the 8x8 digits teachers (tools/arch_sweep.py; docs/results/
# arch-sweep.md). base: the rate the papers train full-size UNets and DiTs at (CIFAR-10, ImageNet),
# the same as the shipped hub recipes; not measured here.
BASE = {"lr": 1e-4}


def _small(lr: float) -> dict[str, dict[str, float | int]]:
    return {"tiny": {"lr": lr, "warmup_steps": 50}, "small": {"lr": lr, "warmup_steps": 50}, "base": BASE}


@hookimpl
def register_students(register):
    register(
        "unet",
        "dkdm_zoo.students.unet:build",
        summary="diffusers UNet2DModel (unconditional/class) or UNet2DConditionModel (text); presets tiny/small/base",
        train_defaults=_small(2e-3),
    )
    register(
        "dit",
        "dkdm_zoo.students.dit:build",
        summary="Diffusion Transformer on timm blocks, adaLN-Zero: unconditional, class or text (cross-attention)",
        train_defaults=_small(2e-3),
    )
    register(
        "convnext",
        "dkdm_zoo.students.convnext:build",
        summary="U-Net of timm ConvNeXt blocks with FiLM time/class conditioning (no text)",
        train_defaults=_small(4e-3),
    )
    register(
        "teacher",
        "dkdm_zoo.teachers.as_student:build",
        summary="the teacher's own network (any family), weights copied; presets full, bk-base/bk-small/bk-tiny "
        "(UNets, BK-SDM), half (transformer depth; student.keep_blocks lists kept blocks)",
        train_defaults={"*": {"lr": 1e-4}},
    )
