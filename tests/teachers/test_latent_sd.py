"""`latent-sd`: a tiny Stable Diffusion pipeline (offline tokenizer) saved to a tmp folder."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from dkdm_zoo.errors import UserError  # noqa: E402
from dkdm_zoo.registry import build_registry  # noqa: E402
from dkdm_zoo.teachers.latent_sd import LatentSDTeacher, load  # noqa: E402

from .tiny import ddpm_scheduler, save_pipeline, tiny_unet, tiny_vae  # noqa: E402

SEQ = 8


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a-z with two merges, built without the hub."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = chars + [c + "</w>" for c in chars] + ["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")], model_max_length=SEQ)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "pipe"
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=SEQ,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    ).eval()
    scheduler = PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True, steps_offset=1
    )
    StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def _direct(folder):
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")

    def embed(prompts):
        ids = tok(
            prompts, padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt"
        ).input_ids
        return text(ids)[0]

    return unet, embed


@torch.no_grad()
def test_spec_predictions_and_cfg(sd_folder, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a cat\n\nzebra at dawn\n")
    teacher = build_registry().create("teachers", "latent-sd", path=str(sd_folder), prompts=str(prompt_file))
    assert isinstance(teacher, LatentSDTeacher) and list(teacher.prompts) == ["a cat", "zebra at dawn"]
    spec = teacher.spec
    assert spec.conditioning == "text" and spec.text_embed_dim == 16 and spec.text_seq_len == SEQ
    assert spec.space == "latent" and spec.sample_shape == (4, 8, 8) and spec.image_shape == (3, 16, 16)
    assert spec.schedule["beta_schedule"] == "scaled_linear" and not spec.clip_sample

    unet, embed = _direct(sd_folder)
    prompts = ["a cat", "zebra at dawn", "cat"]
    cond = teacher.make_condition(prompts=prompts)
    torch.testing.assert_close(cond.text_embeds, embed(prompts))
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500, 999])
    e_c = unet(x, t, encoder_hidden_states=embed(prompts)).sample
    e_u = unet(x, t, encoder_hidden_states=embed([""] * 3)).sample
    torch.testing.assert_close(teacher.predict(x, t, cond, guidance_scale=1.0).eps, e_c, rtol=1e-5, atol=1e-5)
    guided = teacher.predict(x, t, cond)  # default 7.5
    torch.testing.assert_close(guided.eps, e_u + 7.5 * (e_c - e_u), rtol=1e-4, atol=1e-4)
    assert (e_c - e_u).abs().max() > 1e-4  # the text really conditions the UNet

    drawn = teacher.sample_conditions(5, generator=torch.Generator().manual_seed(1))
    assert len(drawn) == 5 and set(drawn.prompts) <= {"a cat", "zebra at dawn"}
    torch.testing.assert_close(drawn.text_embeds, embed(drawn.prompts))


@torch.no_grad()
def test_decode_and_sample(sd_folder):
    teacher = load(path=str(sd_folder), prompts=["a cat"], guidance_scale=2.0)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    vae = tiny_vae()
    ref = vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(teacher.decode(latents), ref)
    samples = teacher.sample(2, steps=2, generator=torch.Generator().manual_seed(3))
    assert samples.shape == (2, 4, 8, 8) and torch.isfinite(samples).all()


def test_prompt_errors(sd_folder, tmp_path):
    teacher = load(path=str(sd_folder))
    with pytest.raises(UserError, match="needs prompts"):
        teacher.sample_conditions(2)
    with pytest.raises(UserError, match="does not exist"):
        load(path=str(sd_folder), prompts=str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="no class labels"):
        teacher.make_condition(labels=[1])


def test_text_prompt_for_unconditional_teacher_is_a_user_error(tmp_path):
    from dkdm_zoo.teachers.ddpm_unet import load as load_unet

    teacher = load_unet(path=str(save_pipeline(tmp_path / "p", tiny_unet(), ddpm_scheduler())))
    with pytest.raises(UserError) as exc:
        teacher.make_condition(prompts=["a cat"])
    assert "unconditional" in str(exc.value) and "\n" not in str(exc.value)


def test_latent_sd_refuses_a_ddpm_pipeline(tmp_path):
    folder = save_pipeline(tmp_path / "p", tiny_unet(), ddpm_scheduler())
    with pytest.raises(UserError, match="no vae/"):
        load(path=str(folder))


@torch.no_grad()
def test_run_of_a_text_teacher_reuses_its_prompts_and_null_condition(sd_folder, tmp_path):
    from .test_run import TinyStudent, make_run
    from .test_run import load as load_run

    original = load(path=str(sd_folder), prompts=["a cat", "zebra"])
    torch.manual_seed(0)
    run = make_run(
        tmp_path / "run",
        "latent-sd",
        {"path": str(sd_folder), "prompts": ["a cat", "zebra"]},
        original.spec,
        TinyStudent(channels=4, out_channels=4),
    )
    teacher = load_run(path=str(run))
    assert teacher.spec.conditioning == "text" and teacher.spec.text_seq_len == SEQ
    drawn = teacher.sample_conditions(4, generator=torch.Generator().manual_seed(5))
    ref = original.sample_conditions(4, generator=torch.Generator().manual_seed(5))
    assert drawn.prompts == ref.prompts
    torch.testing.assert_close(drawn.text_embeds, ref.text_embeds)
    torch.testing.assert_close(teacher.null_condition(2).text_embeds, original.null_condition(2).text_embeds)
    latents = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(teacher.decode(latents), original.decode(latents))
