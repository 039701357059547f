"""What each architecture promises at initialisation and how it uses the libraries it is built on."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from timm.models.convnext import ConvNeXtBlock

from dkdm_zoo.students.base import ConditionEmbedding, broadcast_timesteps, example_inputs
from dkdm_zoo.students.convnext import ConditionedStage
from tests.students.conftest import TINY_SPECS
from tests.students.test_contract import make


def test_dit_is_adaln_zero_at_init():
    """adaLN-Zero: every block starts as the identity and the output layer at zero (DiT, Sec. 3.2)."""
    spec = TINY_SPECS["pixel-class-learned"]
    model = make("dit", spec, depth=3)
    inputs = example_inputs(spec, batch=2)
    with torch.no_grad():
        assert torch.equal(model(**inputs), torch.zeros(2, 2, 16, 16))
        x = torch.randn(2, 64, 32)
        c = torch.randn(2, 32)
        for block in model.blocks:
            assert torch.equal(block(x, c), x)


def test_dit_overlapping_patch_embedding_sees_the_neighbours_and_keeps_the_grid():
    """overlap=1 widens each token's window by a pixel a side at the same stride: a token changes when
    its neighbour pixel does, which a plain 1x1 patch cannot."""
    spec = TINY_SPECS["pixel-uncond"]
    plain, wide = make("dit", spec, patch_size=1, overlap=0), make("dit", spec, patch_size=1, overlap=1)
    assert wide.x_embedder.proj.kernel_size == (3, 3) and wide.x_embedder.proj.padding == (1, 1)
    x = torch.randn(1, spec.channels, *spec.sample_shape[1:])
    nudged = x.clone()
    nudged[..., 5, 6] += 1.0
    with torch.no_grad():
        for model, moved in ((plain, 1), (wide, 9)):  # tokens whose window holds pixel (5, 6)
            before, after = model.x_embedder(x), model.x_embedder(nudged)
            assert before.shape == (1, 8 * 8, 32)
            assert int((after - before).abs().amax(-1).gt(0).sum()) == moved


def test_dit_saved_before_the_overlap_option_loads_with_plain_patches(tmp_path):
    """A finished run's config.json from before `overlap` existed has no such key: it must rebuild the
    1x1-patch model it trained (same weights, same output), not the presets' overlapping one."""
    spec = TINY_SPECS["pixel-uncond"]
    old = make("dit", spec, patch_size=1, overlap=0).eval()
    old.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["overlap"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = type(old).from_pretrained(tmp_path).eval()
    assert loaded.x_embedder.proj.kernel_size == (1, 1)
    inputs = example_inputs(spec, batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), old(**inputs))


def test_dit_unconditional_mode_has_no_class_table():
    model = make("dit", TINY_SPECS["pixel-uncond"])
    assert model.cond_embedder.class_embed is None and model.config.num_classes is None
    classy = make("dit", TINY_SPECS["latent-class"])
    assert classy.cond_embedder.class_embed.num_embeddings == 5 + 1  # + the null label


def test_convnext_stages_are_timm_blocks_with_identity_film_at_init():
    model = make("convnext", TINY_SPECS["pixel-uncond"])
    blocks = [m for m in model.modules() if isinstance(m, ConvNeXtBlock)]
    assert len(blocks) == 2 * len(model.config.widths) + 1  # down, up and the middle stage (depth 1)
    stage = ConditionedStage(16, depth=2, cond_dim=8, mlp_ratio=2.0, kernel_size=7)
    x, c = torch.randn(2, 16, 4, 4), torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(stage(x, c), stage.blocks[1](stage.blocks[0](x)))


def test_condition_embedding_uses_the_sinusoidal_timestep_embedding():
    emb = ConditionEmbedding(16, num_classes=3, freq_dim=32)
    t = torch.tensor([0, 10, 999])
    expected = get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(emb.time_proj(t), expected)
    with torch.no_grad():
        out = emb(t, torch.tensor([0, 1, 3]))
        ref = emb.time_embed(expected) + emb.class_embed.weight[[0, 1, 3]]
    assert torch.allclose(out, ref, atol=1e-6)


def test_broadcast_timesteps():
    assert broadcast_timesteps(5, 3, torch.device("cpu")).tolist() == [5, 5, 5]
    assert broadcast_timesteps(torch.tensor(7), 2, torch.device("cpu")).tolist() == [7, 7]
    with pytest.raises(ValueError, match=r"\(3,\)"):
        broadcast_timesteps(torch.tensor([1, 2]), 3, torch.device("cpu"))


def test_unet_text_student_uses_cross_attention_at_every_attention_level():
    spec = TINY_SPECS["text-latent"]
    model = make("unet", spec, attention_resolutions=(8, 4))
    assert model.config.down_block_types == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert model.config.cross_attention_dim == 32
    assert model.config.mid_block_type == "UNetMidBlock2DCrossAttn"
