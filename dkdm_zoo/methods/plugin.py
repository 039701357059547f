"""Built-in distillation methods, registered through the public hook (lazy factories).

Each method's options are its class's keyword parameters (annotations and defaults): the one
declaration `dkdm-zoo info`, recipes and `--set` are checked against. One-step methods declare the
learning rate their objective trains at (measured on the digits teachers: tools/one_step_curves.py,
tools/boot_sweep.py); declared, they replace the student's own (a denoiser's) where neither recipe nor flag sets them.
"""

from dkdm_zoo.registry.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register(
        "dkdm",
        "dkdm_zoo.methods.dkdm:DKDM",
        summary="DKDM dynamic iterative distillation: a pool advanced one teacher step per training step",
    )
    register(
        "synthetic",
        "dkdm_zoo.methods.synthetic:Synthetic",
        summary="data-free baseline: generate a dataset with the teacher's sampler, then train on it",
    )
    register(
        "data",
        "dkdm_zoo.methods.data:DataTraining",
        summary="standard diffusion training on a real dataset (reference teachers, data baseline)",
    )
    register(
        "boot",
        "dkdm_zoo.methods.boot:BOOT",
        summary="BOOT: data-free bootstrapping into a one-step generator (Signal-ODE, y-space DDIM targets)",
        train_defaults={"lr": 2e-3},
    )
    register(
        "sid",
        "dkdm_zoo.methods.score_distill:SiD",
        summary="SiD: Score identity Distillation into a one-step generator (fake score + generator, data-free)",
        train_defaults={"lr": 1e-4},
    )
    register(
        "diff-instruct",
        "dkdm_zoo.methods.score_distill:DiffInstruct",
        summary="Diff-Instruct: integral-KL distillation into a one-step generator (fake score + generator)",
        train_defaults={"lr": 3e-5},
    )
