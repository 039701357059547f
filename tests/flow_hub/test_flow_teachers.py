"""The sd3 / flux / sana teachers against the diffusers pipelines they come from: the same noise and
prompts give the same latents as StableDiffusion3Pipeline / FluxPipeline / SanaPipeline with
output_type="latent"; schedules read, never guessed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dkdm_zoo.errors import UserError
from dkdm_zoo.registry import build_registry
from dkdm_zoo.teachers.schedulers import read_schedule
from dkdm_zoo.testing.flow_hub_configs import (
    FLUX_DEV,
    FLUX_DEV_SCHEDULER,
    FLUX_SCHNELL,
    SANA_1600M,
    SANA_SCHEDULER,
    SD35_MEDIUM,
)

from .conftest import FAMILIES, LOAD_OPTIONS

PROMPTS = ["a cat riding a horse", "a dog"]
STEPS = 3


def load_teacher(flow_hub, repo, **options):
    registry = build_registry(entry_points=False)
    options = {"max_sequence_length": 8, "prompts": PROMPTS, **LOAD_OPTIONS.get(repo, {}), **options}
    return registry.create("teachers", FAMILIES[repo], path=str(flow_hub.folder[repo]), **options)


def reference_latents(repo, folder, teacher, noise):
    """The family pipeline's own output for the same noise and prompts (its own defaults)."""
    import diffusers

    b, c, h, w = noise.shape
    size = teacher.spec.image_shape[1]
    common = {
        "prompt": PROMPTS,
        "num_inference_steps": STEPS,
        "output_type": "latent",
        "height": size,
        "width": size,
    }
    if repo == SD35_MEDIUM:
        pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(folder)
        return pipe(**common, latents=noise, max_sequence_length=8).images
    if repo in (FLUX_SCHNELL, FLUX_DEV):
        pipe = diffusers.FluxPipeline.from_pretrained(folder)
        packed = diffusers.FluxPipeline._pack_latents(noise, b, c, h, w)
        out = pipe(**common, latents=packed, max_sequence_length=8).images
        return diffusers.FluxPipeline._unpack_latents(out, size, size, size // h)
    # SANA's own DPM-Solver++ (flow sigmas); resolution binning off: 256 px is not one of its bins
    pipe = diffusers.SanaPipeline.from_pretrained(folder)
    return pipe(**common, latents=noise, max_sequence_length=8, use_resolution_binning=False).images


def test_sana_stochastic_sampler_is_euler_on_its_flow_grid(flow_hub):
    """ "ddpm" on SANA: x <- (1 - s') x0 + s' z on the DPM-Solver's own flow sigmas."""
    teacher = load_teacher(flow_hub, SANA_1600M)
    noise = torch.randn((1, *teacher.spec.sample_shape), generator=torch.Generator().manual_seed(0))
    cond = teacher.make_condition(prompts=PROMPTS[:1])
    ours = teacher.sample(
        1, steps=2, sampler="ddpm", cond=cond, noise=noise, generator=torch.Generator().manual_seed(1)
    )
    sigmas = teacher.schedule.sampling_sigmas(2).tolist()
    z = torch.Generator().manual_seed(1)
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        pred = teacher.predict(x, torch.full((1,), s * 1000), cond)
        x = (1 - s_next) * pred.x0 + s_next * torch.randn(x.shape, generator=z)
    torch.testing.assert_close(ours, x)


@pytest.mark.parametrize("repo", [SD35_MEDIUM, FLUX_SCHNELL, FLUX_DEV, SANA_1600M])
def test_teacher_samples_equal_the_pipeline(flow_hub, repo):
    teacher = load_teacher(flow_hub, repo)
    noise = torch.randn((2, *teacher.spec.sample_shape), generator=torch.Generator().manual_seed(0))
    cond = teacher.make_condition(prompts=PROMPTS)
    ours = teacher.sample(2, steps=STEPS, cond=cond, noise=noise.clone())
    ref = reference_latents(repo, flow_hub.folder[repo], teacher, noise.clone())
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref.float(), atol=1e-4, rtol=1e-4)
    assert ref.abs().max() > 1.0  # not a trivial agreement on zeros


def test_specs_read_the_real_values(flow_hub):
    sd3 = load_teacher(flow_hub, SD35_MEDIUM)
    assert sd3.spec.sample_shape == (16, 8, 8) and sd3.spec.image_shape == (3, 64, 64)
    assert sd3.spec.schedule["shift"] == 3.0 and sd3.spec.process == "flow"
    assert sd3.spec.text_seq_len == 77 + 8 and sd3.guidance_scale == 7.0
    smaller = load_teacher(flow_hub, SD35_MEDIUM, resolution=32)  # SD3 samples any size its positions allow
    assert smaller.spec.sample_shape == (16, 4, 4) and smaller.spec.image_shape == (3, 32, 32)
    with pytest.raises(UserError, match="resolution = 40 is not a positive multiple of 16"):
        load_teacher(flow_hub, SD35_MEDIUM, resolution=40)
    with pytest.raises(UserError, match="beyond the transformer's position embedding"):
        load_teacher(flow_hub, SD35_MEDIUM, resolution=512)
    schnell = load_teacher(flow_hub, FLUX_SCHNELL)
    assert schnell.spec.schedule["shift"] == 1.0 and schnell.guidance_scale is None
    sana = load_teacher(flow_hub, SANA_1600M)
    assert sana.spec.sample_shape == (32, 8, 8) and sana.spec.image_shape == (3, 256, 256)
    assert sana.spec.schedule["_class_name"] == "DPMSolverMultistepScheduler"


def test_flux_dev_dynamic_shift_is_the_pipelines_at_its_token_count(flow_hub):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    dev = load_teacher(flow_hub, FLUX_DEV)
    mu = calculate_shift(16, 256, 4096, 0.5, 1.15)  # 8x8 latents packed 2x2: 16 image tokens
    assert dev.spec.schedule["shift"] == pytest.approx(math.exp(mu))
    assert dev.spec.schedule["_dynamic_shift"]["mu"] == pytest.approx(mu)
    assert dev.embedded_guidance == 3.5 and dev.guidance_scale is None  # an input, not CFG
    at_1024 = read_schedule(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", **FLUX_DEV_SCHEDULER},
        learned=False,
        flow=True,
        image_seq_len=4096,
    )
    assert at_1024["schedule"]["shift"] == pytest.approx(math.exp(1.15))


def test_dynamic_shift_without_a_token_count_is_refused():
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", **FLUX_DEV_SCHEDULER}
    with pytest.raises(UserError, match="use_dynamic_shifting = true: the shift depends on the image size"):
        read_schedule(config, learned=False, where="scheduler_config.json", flow=True)


def test_sana_dpm_flow_config_is_its_flow_grid():
    from diffusers import DPMSolverMultistepScheduler

    from dkdm_zoo.diffusion.flow import FlowSchedule

    fields = read_schedule(
        {"_class_name": "DPMSolverMultistepScheduler", **SANA_SCHEDULER}, learned=False, flow=True
    )
    assert fields["process"] == "flow" and fields["prediction_type"] == "flow"
    schedule = FlowSchedule(fields["schedule"])
    reference = DPMSolverMultistepScheduler(**SANA_SCHEDULER)
    reference.set_timesteps(4)
    np.testing.assert_allclose(schedule.sampling_sigmas(4).numpy(), reference.sigmas.double().numpy())
    assert schedule.chain_times[-1] > 999 * 0.99 and schedule.chain_times[0] > 0  # noisiest last, none clean
    bad = {"_class_name": "DPMSolverMultistepScheduler", **SANA_SCHEDULER, "prediction_type": "epsilon"}
    with pytest.raises(UserError, match="prediction_type = 'epsilon'"):
        read_schedule(bad, learned=False, flow=True)
    unknown = {"_class_name": "DPMSolverMultistepScheduler", **SANA_SCHEDULER, "flow_magic": 2}
    with pytest.raises(UserError, match="flow_magic = 2 is a scheduler key dkdm-zoo does not understand"):
        read_schedule(unknown, learned=False, flow=True)


@pytest.mark.parametrize("repo", [SD35_MEDIUM, FLUX_SCHNELL, SANA_1600M])
def test_conditions_by_reference_are_the_encoded_prompts(flow_hub, repo):
    teacher = load_teacher(flow_hub, repo)
    refs = np.array([1, -1, 0, 1])
    cond = teacher.conditions_from_refs(refs)
    direct = teacher.make_condition(prompts=[PROMPTS[1], PROMPTS[0]])
    null = teacher.null_condition(1)
    torch.testing.assert_close(cond.text_embeds[[0, 2, 3]], direct.text_embeds[[0, 1, 0]])
    torch.testing.assert_close(cond.text_embeds[1:2], null.text_embeds)
    for key, value in direct.extras.items():
        torch.testing.assert_close(cond.extras[key][[0, 2, 3]], value[[0, 1, 0]])
    assert not torch.equal(direct.text_embeds[0], direct.text_embeds[1])


def test_schnell_refuses_a_guidance_scale(flow_hub):
    with pytest.raises(UserError, match="no guidance embedding .* drop teacher.guidance_scale"):
        load_teacher(flow_hub, FLUX_SCHNELL, guidance_scale=3.5)


def test_a_scratch_student_view_evaluates_another_network(flow_hub):
    """denoiser() / with_denoiser(): what a fake score or a teacher-copy student reuses."""
    import copy

    teacher = load_teacher(flow_hub, SD35_MEDIUM)
    copy_net = copy.deepcopy(teacher.denoiser()).requires_grad_(True)
    view = teacher.with_denoiser(copy_net)
    x = torch.randn(1, *teacher.spec.sample_shape, requires_grad=True)
    t = torch.full((1,), 500.0)
    cond = teacher.make_condition(prompts=[PROMPTS[0]])
    out = view.denoise(x, t, cond, guidance_scale=1.0).x0
    torch.testing.assert_close(out, teacher.predict(x, t, cond, guidance_scale=1.0).x0)
    out.sum().backward()
    assert x.grad is not None and any(p.grad is not None for p in copy_net.parameters())
    assert all(p.grad is None for p in teacher.denoiser().parameters())
