"""`--student teacher`: the teacher's own network as a student, whole or pruned, on every family.

References are the teachers' own ``model_output`` / ``predict`` (the family's calling code), the
BK-SDM paper's UNet sizes (0.86 / 0.58 / 0.48 / 0.32 B parameters, computed on the meta device from
stable-diffusion-v1-5's real UNet config) and its code's teacher -> student layer mapping.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

from dkdm_zoo.errors import IncompatibleError, UserError
from dkdm_zoo.students.base import example_inputs
from dkdm_zoo.students.pruning import prune
from dkdm_zoo.students.teacher_net import TeacherNetwork
from dkdm_zoo.teachers.as_student import build
from dkdm_zoo.teachers.condition import Condition
from dkdm_zoo.teachers.ddpm_unet import DDPMUNetTeacher
from dkdm_zoo.testing import tiny_teachers as tiny
from dkdm_zoo.testing.hub_configs import sd_unet

torch.set_num_threads(1)

FAMILIES = {
    "ddpm-unet": tiny.ddpm_unet_teacher,
    "flow-unet": tiny.flow_unet_teacher,
    "dit": tiny.dit_teacher,
    "latent-sd": tiny.latent_sd_teacher,
}


def inputs_for(teacher, batch=3):
    inputs = example_inputs(teacher.spec, batch=batch)
    if teacher.spec.process == "flow":
        inputs["timestep"] = inputs["timestep"].float() + 0.5  # a flow teacher's continuous s T
    return inputs


def condition(inputs) -> Condition | None:
    labels, text = inputs.get("class_labels"), inputs.get("encoder_hidden_states")
    return None if labels is None and text is None else Condition(labels=labels, text_embeds=text)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_copy_is_the_teacher_bound_or_loaded_alone(family, tmp_path, capsys):
    teacher = FAMILIES[family]()
    student = build(teacher.spec, teacher=teacher)
    total = len(teacher.denoiser().state_dict())
    assert f"copied {total} of {total} tensors" in capsys.readouterr().err
    assert student.network is not teacher.denoiser()  # a copy: training it leaves the teacher alone
    inputs = inputs_for(teacher)
    with torch.no_grad():
        reference = teacher.model_output(inputs["sample"], inputs["timestep"], condition(inputs))
        torch.testing.assert_close(student(**inputs), reference)
        student.save_pretrained(tmp_path, safe_serialization=True)
        loaded = TeacherNetwork.from_pretrained(tmp_path).eval()  # no teacher: the family's plain call
        assert not loaded.bound and loaded.config.calling == "diffusers"
        torch.testing.assert_close(loaded(**inputs), reference)
    student.zero_grad()
    student(**inputs).square().mean().backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.denoiser().parameters())


def test_a_v_prediction_teacher_gives_an_eps_student_and_exports_as_v():
    config = tiny.scheduler_config(prediction_type="v_prediction")
    teacher = DDPMUNetTeacher(tiny.tiny_unet(), config)
    student = build(teacher.spec, teacher=teacher)
    assert student.config.prediction_type == "v_prediction"
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 5, 12, 19])
    with torch.no_grad():
        torch.testing.assert_close(student(x, t), teacher.predict(x, t).eps, rtol=1e-4, atol=1e-5)
    chosen = build(teacher.spec, teacher=teacher, prediction_type="epsilon")  # read as eps: raw output
    with torch.no_grad():
        torch.testing.assert_close(chosen(x, t), teacher.model_output(x, t, None))


def test_a_custom_calling_family_needs_its_teacher(tmp_path):
    """A family that did not declare the plain call (FLUX packs latents, say) is called through its own
    model_output; loaded without the teacher, the student refuses in one line."""
    teacher = tiny.ddpm_unet_teacher()
    teacher.student_calling = "teacher"  # as a family that calls its network its own way
    student = build(teacher.spec, teacher=teacher)
    student.save_pretrained(tmp_path, safe_serialization=True)
    loaded = TeacherNetwork.from_pretrained(tmp_path)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 4])
    with pytest.raises(UserError, match="needs its teacher") as info:
        loaded(x, t)
    assert "\n" not in str(info.value)
    from dkdm_zoo.teachers.as_student import bind_run_student

    bind_run_student(loaded, lambda: teacher)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), teacher.model_output(x, t, None))


def test_refusals_are_one_line():
    teacher = tiny.ddpm_unet_teacher()
    for kwargs, text in (
        ({"prediction_type": "flow"}, "does not fit the vp teacher"),
        ({"preset": "half"}, "depth pruning needs a transformer"),
        ({"preset": "bk-base"}, "needs at least 2"),  # the tiny UNet has one resnet per stage
        ({"preset": "small"}, "no preset 'small'"),
    ):
        with pytest.raises((UserError, IncompatibleError), match=text) as info:
            build(teacher.spec, teacher=teacher, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(IncompatibleError, match="needs the teacher itself"):
        build(teacher.spec)


# -- pruning -----------------------------------------------------------------------------------------------
def sd_like_unet(size: str) -> dict:
    """stable-diffusion-v1-5's UNet config; narrow widths keep its two resnets per down stage."""
    return dict(sd_unet(size), layers_per_block=2)


@pytest.mark.parametrize(("preset", "billions"), [("bk-base", 0.58), ("bk-small", 0.48), ("bk-tiny", 0.32)])
def test_bk_presets_have_the_papers_sizes_and_copy_every_tensor(preset, billions):
    with init_empty_weights():
        teacher = UNet2DConditionModel.from_config(sd_unet("full"))
        config, teacher_key, _ = prune(teacher, preset)
        student = UNet2DConditionModel.from_config(config)
    count = sum(p.numel() for p in teacher.parameters())
    assert round(count / 1e9, 2) == 0.86
    assert round(sum(p.numel() for p in student.parameters()) / 1e9, 2) == billions
    source = teacher.state_dict()
    assert all(source[teacher_key(k)].shape == v.shape for k, v in student.state_dict().items())


def test_bk_mapping_follows_the_bk_sdm_code():
    with init_empty_weights():
        teacher = UNet2DConditionModel.from_config(sd_unet("full"))
    _, base, _ = prune(teacher, "bk-base")
    assert base("up_blocks.1.resnets.1.conv1.weight") == "up_blocks.1.resnets.2.conv1.weight"
    assert base("up_blocks.1.attentions.0.proj_in.weight") == "up_blocks.1.attentions.0.proj_in.weight"
    assert base("down_blocks.2.resnets.0.conv1.weight") == "down_blocks.2.resnets.0.conv1.weight"
    _, tiny_map, removed = prune(teacher, "bk-tiny")
    assert tiny_map("up_blocks.0.attentions.1.proj_out.weight") == "up_blocks.1.attentions.2.proj_out.weight"
    assert tiny_map("up_blocks.1.upsamplers.0.conv.weight") == "up_blocks.2.upsamplers.0.conv.weight"
    assert removed == {"layers_per_block": [2, 1], "mid_block": True, "innermost_stage": 3}


def test_a_pruned_sd_student_runs_and_starts_from_the_teacher(capsys):
    teacher = tiny.latent_sd_teacher()
    torch.manual_seed(0)
    teacher.unet = UNet2DConditionModel.from_config(
        dict(sd_like_unet("narrow"), cross_attention_dim=16)
    ).eval()
    teacher.unet.requires_grad_(False)
    student = build(teacher.spec, "bk-small", teacher=teacher)
    assert "copied" in capsys.readouterr().err
    kept = student.network.state_dict()
    source = teacher.unet.state_dict()
    assert torch.equal(
        kept["up_blocks.3.resnets.1.conv1.weight"], source["up_blocks.3.resnets.2.conv1.weight"]
    )
    assert student.network.mid_block is None and student.config.source["copied"] == len(kept)
    inputs = inputs_for(teacher, batch=2)
    assert student(**inputs).shape == (2, 4, 8, 8)


def test_depth_pruning_keeps_the_listed_blocks():
    teacher = tiny.dit_teacher()
    torch.manual_seed(0)
    teacher.transformer = DiTTransformer2DModel(**{**teacher.transformer.config, "num_layers": 5}).eval()
    half = build(teacher.spec, "half", teacher=teacher)
    assert half.network.config.num_layers == 3
    assert half.config.source["kept_blocks"] == {"transformer_blocks": [0, 2, 4]}
    chosen = build(teacher.spec, teacher=teacher, keep_blocks=(1, 4))
    a = chosen.network.transformer_blocks[1].ff.net[2].weight
    assert torch.equal(a, teacher.transformer.transformer_blocks[4].ff.net[2].weight)
    with pytest.raises(UserError, match="0..4"):
        build(teacher.spec, teacher=teacher, keep_blocks=(7,))


def test_a_lora_on_a_bf16_base_merges_into_one_bf16_copy_summed_in_float32():
    pytest.importorskip("peft")
    teacher = tiny.ddpm_unet_teacher()
    teacher.to("cpu", torch.bfloat16)
    lora = build(teacher.spec, teacher=teacher, lora_rank=4)
    with torch.no_grad():  # adapters that change the output (peft starts B at zero)
        for name, p in lora.network.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    merged = lora.merged()
    base = dict(teacher.denoiser().named_parameters())
    assert {p.dtype for p in merged.network.parameters()} == {torch.bfloat16}
    layer = next(m for n, m in lora.network.named_modules() if hasattr(m, "get_delta_weight"))
    name = next(n for n, m in lora.network.named_modules() if m is layer)
    want = (base[f"{name}.weight"].float() + layer.get_delta_weight("default").float()).bfloat16()
    assert torch.equal(dict(merged.network.named_parameters())[f"{name}.weight"], want)
    assert not torch.equal(want, base[f"{name}.weight"])  # the adapters are in it
    # the merged tensors are new ones: the teacher's shared base is untouched
    assert not any(p.data_ptr() == q.data_ptr() for p in merged.network.parameters() for q in base.values())


def test_from_scratch_builds_the_pruned_architecture_without_the_teachers_weights(capsys):
    teacher = tiny.dit_teacher()
    copied = build(teacher.spec, "half", teacher=teacher)
    scratch = build(teacher.spec, "half", teacher=teacher, from_scratch=True)
    assert "copied 0 of" in capsys.readouterr().err
    assert scratch.config == {
        **copied.config,
        "source": {**copied.config["source"], **scratch.config["source"]},
    } or (sum(p.numel() for p in scratch.parameters()) == sum(p.numel() for p in copied.parameters()))
    same_shapes = {k: v.shape for k, v in scratch.state_dict().items()} == {
        k: v.shape for k, v in copied.state_dict().items()
    }
    assert same_shapes
    differs = [
        k
        for k, v in scratch.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, copied.state_dict()[k])
    ]
    assert differs  # new weights, not the teacher's
    assert scratch.config["source"]["from_scratch"] is True
    with pytest.raises(UserError, match="from_scratch"):
        build(teacher.spec, teacher=teacher, from_scratch=True, lora_rank=4)
