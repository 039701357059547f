"""The dry-run's activation memory: what one more sample costs, and what a forward costs once."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from dkdm_zoo.engine.budget import _block_checkpointing, _measure


def mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))


def test_activations_per_sample_are_the_saved_inputs_and_fp32_weights_cost_nothing_more():
    net = mlp()
    cost = _measure(lambda b: net(torch.randn(b, 64, requires_grad=True)), list(net.parameters()), True)
    # saved per sample: the first layer's input (64) and the ReLU output, which the second layer
    # saves as its input too (128), fp32; the weights saved are the parameters themselves
    assert cost.activation_bytes == (64 + 128) * 4
    assert cost.activation_fixed_bytes == 0
    assert cost.activations(8) == 8 * (64 + 128) * 4
    assert cost.forward_flops == 2 * (64 * 128 + 128 * 32)  # batch 1


def test_under_bf16_the_weight_casts_are_counted_once_whatever_the_batch():
    net = mlp()
    cost = _measure(
        lambda b: net(torch.randn(b, 64, requires_grad=True)), list(net.parameters()), True, "bf16"
    )
    assert cost.activation_bytes == (64 + 128) * 2
    assert cost.activation_fixed_bytes == (64 * 128 + 128 * 32) * 2  # bf16 copies of both weights
    assert cost.activations(100) == 100 * (64 + 128) * 2 + (64 * 128 + 128 * 32) * 2


def test_activation_checkpointing_is_measured_and_then_switched_back_off():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )  # fmt: skip

    def forward(batch: int) -> torch.Tensor:
        x = torch.randn(batch, 1, 8, 8, requires_grad=True)
        return unet(x, torch.full((batch,), 10)).sample

    params = list(unet.parameters())
    plain = _measure(forward, params, True)
    with _block_checkpointing([unet], enabled=True):
        assert unet.is_gradient_checkpointing
        checkpointed = _measure(forward, params, True)
    assert not unet.is_gradient_checkpointing
    assert 0 < checkpointed.activation_bytes < plain.activation_bytes / 2
    assert checkpointed.forward_flops == plain.forward_flops
    with _block_checkpointing([unet], enabled=False):
        assert not unet.is_gradient_checkpointing
