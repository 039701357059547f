"""`dit`: a tiny DiT (+ tiny VAE) saved as a DiTPipeline folder, checked against direct calls."""

from __future__ import annotations

import pytest
import torch
from diffusers import DiTPipeline

from dkdm_zoo.registry import build_registry
from dkdm_zoo.teachers.dit import DiTTeacher, load

from .tiny import ddpm_scheduler, tiny_dit, tiny_vae

TS = torch.tensor([0, 17, 400, 999])


@pytest.fixture()
def pipeline_folder(tmp_path):
    transformer, vae = tiny_dit(), tiny_vae(latent_channels=4)
    DiTPipeline(transformer=transformer, vae=vae, scheduler=ddpm_scheduler()).save_pretrained(
        tmp_path / "dit"
    )
    return tmp_path / "dit", transformer, vae


def test_latent_dit_spec_predictions_and_cfg(pipeline_folder):
    folder, transformer, _ = pipeline_folder
    teacher = build_registry().create("teachers", "dit", path=str(folder), guidance_scale=2.5)
    assert isinstance(teacher, DiTTeacher)
    spec = teacher.spec
    assert spec.space == "latent" and spec.sample_shape == (4, 8, 8) and spec.image_shape == (3, 16, 16)
    assert spec.variance_type == "learned_range" and spec.conditioning == "class" and spec.num_classes == 5
    assert not any(p.requires_grad for m in teacher.modules() for p in m.parameters())

    g = torch.Generator().manual_seed(0)
    x = torch.randn(len(TS), 4, 8, 8, generator=g)
    labels = torch.tensor([0, 4, 2, 1])
    cond = teacher.make_condition(labels=labels)
    plain = teacher.predict(x, TS, cond, guidance_scale=1.0)
    raw = transformer(x, timestep=TS, class_labels=labels).sample
    acp = teacher.schedule.alphas_cumprod[TS].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(plain.eps, raw[:, :4])
    torch.testing.assert_close(plain.var_values, raw[:, 4:])
    torch.testing.assert_close(
        plain.x0, (x - (1 - acp).sqrt() * raw[:, :4]) / acp.sqrt(), rtol=1e-4, atol=1e-3
    )
    # per-sample timesteps are really used: one sample alone at its t gives the same output
    single = transformer(x[2:3], timestep=TS[2:3], class_labels=labels[2:3]).sample
    torch.testing.assert_close(raw[2:3], single, rtol=1e-5, atol=1e-5)

    guided = teacher.predict(x, TS, cond)  # the configured scale, 2.5
    null = transformer(x, timestep=TS, class_labels=torch.full_like(labels, 5)).sample
    torch.testing.assert_close(
        guided.eps, null[:, :4] + 2.5 * (raw[:, :4] - null[:, :4]), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(guided.var_values, raw[:, 4:])  # variance from the conditional branch
    assert (guided.eps - plain.eps).abs().max() > 1e-3


def test_decode_and_sample_shapes(pipeline_folder):
    folder, _, vae = pipeline_folder
    teacher = load(path=str(folder))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images = teacher.decode(latents)
    ref = vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images, ref)
    samples = teacher.sample(2, steps=3, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (2, 4, 8, 8) and torch.isfinite(samples).all()
    ddpm = teacher.sample(2, steps=3, sampler="ddpm", generator=torch.Generator().manual_seed(2))
    assert ddpm.shape == (2, 4, 8, 8) and torch.isfinite(ddpm).all()


def test_pixel_space_dit_without_vae(tmp_path):
    transformer = tiny_dit(in_channels=3, sample_size=8)
    transformer.save_pretrained(tmp_path / "px" / "transformer")
    ddpm_scheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(tmp_path / "px" / "scheduler")
    teacher = load(path=str(tmp_path / "px"), guidance_scale=None)
    assert teacher.spec.space == "pixel" and teacher.spec.image_shape == (3, 8, 8)
    assert teacher.spec.schedule["beta_schedule"] == "squaredcos_cap_v2"
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(teacher.decode(x), x)
    # unconditional call means DiT's null label
    out = teacher.predict(x, TS[:2])
    ref = transformer(x, timestep=TS[:2], class_labels=torch.tensor([5, 5])).sample
    torch.testing.assert_close(out.eps, ref[:, :3])
