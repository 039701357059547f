"""save_pretrained / from_pretrained rebuild every student bit-identically; UNet students hand off to diffusers."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel

from dkdm_zoo.students.base import example_inputs
from tests.students.conftest import TINY_SPECS, UNSUPPORTED
from tests.students.test_contract import REGISTRY, make, perturbed

PAIRS = [(s, f) for s in ("unet", "dit", "convnext") for f in TINY_SPECS if f not in UNSUPPORTED[s]]


@pytest.mark.parametrize(("student", "family"), PAIRS)
def test_save_and_load_are_bit_identical(student: str, family: str, tmp_path):
    spec = TINY_SPECS[family]
    model = perturbed(make(student, spec))  # non-trivial weights everywhere (zero inits moved)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == type(model).__name__

    loaded = type(model).from_pretrained(tmp_path).eval()
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    inputs = example_inputs(spec, batch=2)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))


@pytest.mark.parametrize("family", ["pixel-uncond", "pixel-class-learned"])
def test_unet_student_hands_off_to_a_ddpm_pipeline(family: str, tmp_path):
    spec = TINY_SPECS[family]
    student = perturbed(make("unet", spec))
    plain = student.to_diffusers_unet()
    assert type(plain) is UNet2DModel
    inputs = example_inputs(spec, batch=2)
    labels = inputs.get("class_labels")
    with torch.no_grad():
        expected = student(**inputs)
        assert torch.equal(plain(inputs["sample"], inputs["timestep"], class_labels=labels).sample, expected)

    DDPMPipeline(
        unet=plain, scheduler=DDPMScheduler(num_train_timesteps=spec.num_train_timesteps)
    ).save_pretrained(tmp_path)
    pipe = DDPMPipeline.from_pretrained(tmp_path, use_safetensors=True)
    assert type(pipe.unet) is UNet2DModel
    with torch.no_grad():
        assert torch.equal(
            pipe.unet(inputs["sample"], inputs["timestep"], class_labels=labels).sample, expected
        )
    if spec.conditioning == "none":  # the pipeline itself samples unconditional students
        image = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
        assert image.shape == (1, *spec.sample_shape[1:], spec.channels)


def test_text_unet_student_converts_to_unet2dcondition():
    spec = TINY_SPECS["text-latent"]
    student = perturbed(make("unet", spec))
    plain = student.to_diffusers_unet()
    assert type(plain) is UNet2DConditionModel
    inputs = example_inputs(spec, batch=2)
    with torch.no_grad():
        ref = student(**inputs)
        assert torch.equal(
            plain(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"]).sample, ref
        )
    assert REGISTRY.get("students", "unet").plugin == "dkdm_zoo.students.plugin"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_plain_diffusers_copy_keeps_dtype_and_does_not_warn(dtype):
    """Export hands diffusers a stock UNet2DModel in the student's dtype, and a float32 run prints no
    "modules that should be kept in float32" warning (diffusers' ModelMixin.to warns on any dtype)."""
    import logging

    from dkdm_zoo.students.base import plain_copy

    student = perturbed(make("unet", TINY_SPECS["pixel-uncond"])).to(dtype)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        plain = plain_copy(student, UNet2DModel)
    finally:
        logger.removeHandler(handler)
    assert type(plain) is UNet2DModel and plain.dtype == dtype
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), student.state_dict().values(), strict=True)
    )
    warned = [r.getMessage() for r in records if "kept in float32" in r.getMessage()]
    if dtype == torch.float32:
        assert not warned, warned
