"""Built-in distillation methods, registered through the public hook (lazy factories)."""

from dkdm_zoo.registry.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register(
        "dkdm",
        "dkdm_zoo.methods.dkdm:DKDM",
        summary="DKDM dynamic iterative distillation: a pool advanced one teacher step per training step",
        options={
            "rho": 0.4,
            "variant": "dynamic",
            "pool_init": "ddim",
            "pool_init_steps": 4,
            "pool_init_batch": 0,
            "pool_placement": "auto",
            "kl_weight": 1.0,
            "cond_drop_prob": 0.0,
            "target": "eps",
            "weighting": "none",
            "snr_gamma": 5.0,
        },
    )
    register(
        "synthetic",
        "dkdm_zoo.methods.synthetic:Synthetic",
        summary="data-free baseline: generate a dataset with the teacher's sampler, then train on it",
        options={
            "num_samples": 1024,
            "sampler": "ddpm",
            "sampler_steps": 1000,
            "sample_batch": 256,
            "cond_drop_prob": 0.0,
            "vlb": True,
        },
    )
    register(
        "data",
        "dkdm_zoo.methods.data:DataTraining",
        summary="standard diffusion training on a real dataset (reference teachers, data baseline)",
        options={"dataset": "digits", "cond_drop_prob": 0.1, "vlb": True},
    )
    register(
        "boot",
        "dkdm_zoo.methods.boot:BOOT",
        summary="BOOT: data-free bootstrapping into a one-step generator (Signal-ODE, y-space DDIM targets)",
        options={
            "num_steps": 16,
            "time_sampling": "grid",
            "weighting": "min-snr",
            "boundary_weight": 0.1,
            "boundary_every": 1,
            "guidance_scale": None,
            "clip": None,
            "init_from_teacher": "auto",
        },
    )
    shared = {
        "fake_score_steps": 1,
        "generator_lr": None,
        "fake_score_lr": None,
        "adam_beta1": 0.0,
        "adam_beta2": 0.999,
        "fake_time": "lognormal",
        "p_mean": -1.2,
        "p_std": 1.2,
        "t_max_fraction": 0.8,
        "sigma_data": 0.5,
        "guidance_scale": None,
        "fake_guidance_scale": 1.0,
        "init_from_teacher": "auto",
    }
    register(
        "sid",
        "dkdm_zoo.methods.score_distill:SiD",
        summary="SiD: Score identity Distillation into a one-step generator (fake score + generator, data-free)",
        options={"alpha": 1.2, "init_sigma": 2.5, "generator_time": "edm-schedule", **shared},
    )
    register(
        "diff-instruct",
        "dkdm_zoo.methods.score_distill:DiffInstruct",
        summary="Diff-Instruct: integral-KL distillation into a one-step generator (fake score + generator)",
        options={"init_sigma": 1.0, "generator_time": "lognormal", **shared},
    )
