"""What the digits results tables hold: each table's rows as `dkdm-zoo distill` arguments.

tools/results_digits.py runs them (budget, seed and output added there) and tabulates them.
"""

from __future__ import annotations

SPEC = {
    "ddpm": ["--teacher", "spec", "--set", "teacher.sample_shape=[1,8,8]"],
    "dit": [
        "--teacher", "spec", "--set", "teacher.sample_shape=[1,8,8]", "--set", 'teacher.conditioning="class"',
        "--set", "teacher.num_classes=10", "--set", 'teacher.variance_type="learned_range"',
    ],
}  # fmt: skip


def init_rows() -> dict[str, list[str]]:
    """DKDM's pool initialisations at an equal training budget (the UNet student of the ddpm table)."""
    base = ["--teacher", "digits-ddpm", "--student", "unet", "--preset", "small", "--method", "dkdm",
            "--set", "method.rho=0.05", "--set", "train.lr=4e-4", "--set", "train.warmup_steps=50",
            "--set", "train.ema_decay=0.995"]  # fmt: skip
    rows = {"ancestral (paper)": [*base, "--set", 'method.pool_init="ancestral"']}
    for kind, steps in (
        ("ddim", 1),
        ("ddim", 2),
        ("ddim", 4),
        ("ddim", 10),
        ("trajectory", 10),
        ("trajectory", 100),
    ):
        rows[f"{kind} {steps}"] = [
            *base,
            "--set",
            f'method.pool_init="{kind}"',
            "--set",
            f"method.pool_init_steps={steps}",
        ]
    return rows


# Every student of the cross-architecture tables, built-in and plugin (row label -> registry name).
STUDENTS = {"unet": "unet", "dit": "dit", "convnext": "convnext", "uvit (plugin)": "uvit"}


def rows_for(table: str) -> dict[str, list[str]]:
    """Row name -> distill arguments (without budget, seed, output).

    The ddpm and dit tables use each student's defaults only (its preset and its declared training
    settings: no learning rate, warmup or EMA given here), so they show what a user gets.
    """
    if table == "init":
        return init_rows()
    teacher = f"digits-{table}"
    # DKDM at its defaults (pool of rho*T*b slots, 10-step DDIM init); the synthetic set is as large as
    # the real one, drawn with the teacher's 50-step DDIM.
    dkdm = ["--method", "dkdm"]
    synthetic = ["--method", "synthetic", "--set", "method.num_samples=1797", "--set", 'method.sampler="ddim"',
                 "--set", "method.sampler_steps=50"]  # fmt: skip
    rows = {}
    if table == "ddpm":
        rows["data unet"] = [*SPEC[table], "--method", "data", "--set", 'method.dataset="digits"',
                               "--student", "unet"]  # fmt: skip
    for label, student in STUDENTS.items():
        rows[f"DKDM {label}"] = ["--teacher", teacher, "--student", student, *dkdm]
        rows[f"synthetic {label}"] = ["--teacher", teacher, "--student", student, *synthetic]
    return rows


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# The BOOT generators: digits-ddpm's own architecture as a `unet` (initialised from the teacher, as
# in the paper); for digits-dit (a diffusers DiT, which no built-in student matches) a `dit` from scratch.
BOOT_ROWS = {
    "boot": {
        "BOOT unet (1 step)": ["--teacher", "digits-ddpm", "--student", "unet", "--preset", "small",
                               "--set", "student.block_out_channels=[32,64,64]", "--set", "student.layers_per_block=1",
                               "--set", "student.attention_resolutions=[4]", "--set", "student.min_resolution=2",
                               "--set", "student.dropout=0.0", "--method", "boot", "--set", "train.lr=2e-3",
                               "--set", "train.ema_decay=0.995"],
    },
    "boot-dit": {
        "BOOT dit (1 step)": ["--teacher", "digits-dit", "--student", "dit", "--preset", "small", "--method", "boot",
                              "--set", "train.lr=1e-3", "--set", "train.warmup_steps=50",
                              "--set", "train.ema_decay=0.995"],
    },
    # The flow teacher: DKDM at its defaults, and both one-step methods from the teacher's own architecture.
    "flow": {
        "DKDM unet": ["--teacher", "digits-flow", "--student", "unet", "--method", "dkdm"],
        "SiD (1 step)": ["--recipe", "recipes/digits-flow-sid.toml"],
        "BOOT unet (1 step)": ["--teacher", "digits-flow", "--student", "unet", "--preset", "small",
                               "--set", "student.block_out_channels=[32,64,64]", "--set", "student.layers_per_block=1",
                               "--set", "student.attention_resolutions=[4]", "--set", "student.min_resolution=2",
                               "--set", "student.dropout=0.0", "--method", "boot", "--set", "train.lr=2e-3",
                               "--set", "train.ema_decay=0.995"],
    },
}  # fmt: skip
# Students pruned from the teacher vs the same architecture from scratch (DKDM at its defaults):
# digits-dit's 4 DiT blocks, every second one kept (`--preset half`), with and without BK-SDM's
# feature loss; the built-in `dit` small student is the dit table's row.
PRUNED_ROWS = {
    "DKDM teacher half (copied)": ["--teacher", "digits-dit", "--student", "teacher", "--preset", "half",
                                   "--method", "dkdm"],
    "DKDM teacher half (scratch)": ["--teacher", "digits-dit", "--student", "teacher", "--preset", "half",
                                    "--set", "student.from_scratch=true", "--method", "dkdm"],
    "DKDM teacher half + features (copied)": ["--teacher", "digits-dit", "--student", "teacher", "--preset",
                                              "half", "--method", "dkdm", "--set", "method.feature_weight=1"],
}  # fmt: skip
BOOT_ROWS["pruned"] = PRUNED_ROWS
TEACHER = {"ddpm": "ddpm", "dit": "dit", "boot": "ddpm", "boot-dit": "dit", "init": "ddpm", "flow": "flow",
           "pruned": "dit"}  # fmt: skip
AGAINST = {"ddpm": ("data", "teacher"), "dit": ("data", "teacher"), "boot": ("data", "teacher"), "boot-dit": ("data", "teacher"),
           "init": ("data", "teacher"), "flow": ("data", "teacher"), "pruned": ("data", "teacher")}  # fmt: skip


TITLES = {
    "ddpm": "digits-ddpm: every student with DKDM and the synthetic baseline, each at its defaults",
    "dit": "digits-dit (guidance 3, class-conditional): every student with DKDM and the synthetic baseline, each at its defaults",
    "boot": "BOOT on digits-ddpm: one step vs the teacher's DDIM",
    "boot-dit": "BOOT on digits-dit (guidance 3): one step vs the teacher's DDIM",
    "init": "DKDM pool initialisations on digits-ddpm (UNet student, rho 0.05)",
    "flow": "digits-flow (rectified flow): DKDM, SiD and BOOT vs the teacher's Euler steps",
    "pruned": "digits-dit: DKDM into the teacher's DiT pruned to half its blocks, copied vs from scratch",
}
