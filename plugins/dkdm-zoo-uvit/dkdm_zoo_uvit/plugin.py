"""The plugin module named by the ``dkdm_zoo`` entry point: registers the student, imports no torch."""

from dkdm_zoo.registry import hookimpl


@hookimpl
def register_students(register):
    register(
        "uvit",
        "dkdm_zoo_uvit.model:build",
        summary="U-ViT (Bao et al. 2023): time, condition and patches as tokens, long skips (timm blocks)",
    )
