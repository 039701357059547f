"""Built-in distillation methods, registered through the public hook (lazy factories).

Each method's options are its class's keyword parameters (annotations and defaults): the one
declaration `dkdm-zoo info`, recipes and `--set` are checked against.
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
    )
    register(
        "sid",
        "dkdm_zoo.methods.score_distill:SiD",
        summary="SiD: Score identity Distillation into a one-step generator (fake score + generator, data-free)",
    )
    register(
        "diff-instruct",
        "dkdm_zoo.methods.score_distill:DiffInstruct",
        summary="Diff-Instruct: integral-KL distillation into a one-step generator (fake score + generator)",
    )
