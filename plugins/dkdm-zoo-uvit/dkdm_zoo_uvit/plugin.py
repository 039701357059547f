"""The plugin module named by the ``dkdm_zoo`` entry point: registers the student, imports no torch."""

from dkdm_zoo.registry import hookimpl


@hookimpl
def register_students(register):
    register(
        "uvit",
        "dkdm_zoo_uvit.model:build",
        summary="U-ViT (Bao et al. 2023): time, condition and patches as tokens, long skips (timm blocks)",
        # tiny/small: from dkdm-zoo's tools/arch_sweep.py on the 8x8 digits, run before 0.1.1's start-up
        # fix (identity-init output conv) and not re-swept since; base: the paper's rate
        train_defaults={
            "tiny": {"lr": 2e-3, "warmup_steps": 50},
            "small": {"lr": 2e-3, "warmup_steps": 50},
            "base": {"lr": 1e-4},
        },
    )
