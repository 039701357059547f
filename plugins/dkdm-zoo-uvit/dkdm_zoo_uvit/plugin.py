"""The plugin module named by the ``dkdm_zoo`` entry point: registers the student, imports no torch."""

from dkdm_zoo.registry import hookimpl


@hookimpl
def register_students(register):
    register(
        "uvit",
        "dkdm_zoo_uvit.model:build",
        summary="U-ViT (Bao et al. 2023): time, condition and patches as tokens, long skips (timm blocks)",
        # measured with DKDM on the 8x8 digits teachers (dkdm-zoo's tools/arch_sweep.py); base: the paper's rate
        train_defaults={
            "tiny": {"lr": 2e-3, "warmup_steps": 50},
            "small": {"lr": 2e-3, "warmup_steps": 50},
            "base": {"lr": 1e-4},
        },
    )
