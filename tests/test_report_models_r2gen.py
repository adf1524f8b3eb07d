"""R2Gen's relational memory and memory-driven conditional layer norm: hand-computed cases, memory dependence, causality."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxr_irgen.report_models.r2gen import ConditionalLayerNorm, R2GenDecoder, RelationalMemory


def _set_linear(layer: nn.Linear, weight: torch.Tensor, bias: float = 0.0) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.fill_(bias)


def test_relational_memory_step_matches_a_hand_computed_case():
    d = 4
    memory_module = RelationalMemory(num_slots=3, d_model=d, num_heads=1, dropout=0.0).eval()
    with torch.no_grad():
        memory_module.attention.in_proj_weight.copy_(torch.eye(d).repeat(3, 1))  # q = k = v = identity
        memory_module.attention.in_proj_bias.zero_()
    _set_linear(memory_module.attention.out_proj, torch.eye(d))
    for layer in (*memory_module.mlp[::2], memory_module.input_gates, memory_module.memory_gates):
        _set_linear(layer, torch.zeros_like(layer.weight))  # MLP adds 0; both gates are sigmoid(0) = 0.5

    memory = memory_module.initial_memory(1)
    assert torch.equal(memory[0], torch.eye(3, 4))  # identity, zero-padded to d columns
    token = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # orthogonal to every memory row
    # Row i attends over [e1, e2, e3, token] with scores 1/sqrt(4) on itself and 0 elsewhere.
    a = math.exp(0.5) / (math.exp(0.5) + 3)
    b = 1 / (math.exp(0.5) + 3)
    expected = torch.full((3, 4), 0.5 * math.tanh(b))  # 0.5 tanh(memory + attention) + 0.5 memory, memory = 0 off the diagonal
    for i in range(3):
        expected[i, i] = 0.5 * math.tanh(1 + a) + 0.5
    with torch.no_grad():
        out = memory_module.step(token, memory)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=0)


def test_conditional_layer_norm_matches_a_hand_computed_case_and_follows_the_memory():
    norm = ConditionalLayerNorm(d_model=2, num_slots=1, memory_dim=2, eps=1e-12)
    _set_linear(norm.delta_gamma[0], torch.eye(2))
    _set_linear(norm.delta_gamma[2], torch.eye(2))
    _set_linear(norm.delta_beta[0], torch.eye(2))
    _set_linear(norm.delta_beta[2], 2 * torch.eye(2))
    x = torch.tensor([[[1.0, 3.0]]])  # layer-normed: [-1, 1]
    memory = torch.tensor([[[[0.5, 2.0]]]])  # Δγ = relu(m) = [0.5, 2], Δβ = 2 relu(m) = [1, 4]
    with torch.no_grad():
        out = norm(x, memory)
        other = norm(x, torch.tensor([[[[-1.0, 0.0]]]]))  # Δγ = Δβ = 0: a plain layer norm
    torch.testing.assert_close(out, torch.tensor([[[-1.5 + 1.0, 3.0 + 4.0]]]))
    torch.testing.assert_close(other, torch.tensor([[[-1.0, 1.0]]]))


@pytest.fixture
def tiny_r2gen():
    torch.manual_seed(0)
    return R2GenDecoder(vocab_size=11, max_positions=12, d_model=16, ffn=16, heads=2, layers=2, memory_slots=3, memory_heads=2, dropout=0.0).eval()


def test_changing_the_memory_changes_the_output(tiny_r2gen):
    encoded = tiny_r2gen.prepare(torch.randn(2, 5, 16))
    tokens = torch.randint(4, 11, (2, 7))
    with torch.no_grad():
        default = tiny_r2gen.logits(tokens, encoded)
        same = tiny_r2gen.logits(tokens, encoded, tiny_r2gen.memory.initial_memory(2))
        other = tiny_r2gen.logits(tokens, encoded, torch.randn(2, 3, 16))
    torch.testing.assert_close(default, same)
    assert (default - other).abs().amax(-1).min() > 1e-3  # every position of every report changes


def test_memory_and_logits_are_causal_and_read_the_image(tiny_r2gen):
    encoded = tiny_r2gen.prepare(torch.randn(1, 5, 16))
    tokens = torch.randint(4, 11, (1, 8))
    changed = tokens.clone()
    changed[0, 5] = 4 + (tokens[0, 5] - 3) % 7
    with torch.no_grad():
        logits, logits_changed = tiny_r2gen.logits(tokens, encoded), tiny_r2gen.logits(changed, encoded)
        states = tiny_r2gen.memory(torch.randn(1, 8, 16))
        other_image = tiny_r2gen.logits(tokens, tiny_r2gen.prepare(torch.randn(1, 5, 16)))
    torch.testing.assert_close(logits[:, :5], logits_changed[:, :5])
    assert (logits[:, 5:] - logits_changed[:, 5:]).abs().amax() > 1e-4
    assert states.shape == (1, 8, 3, 16)
    assert (other_image - logits).abs().amax() > 1e-4  # the image reaches every position through cross-attention


def test_r2gen_is_a_decoder_of_the_registry():
    from cxr_irgen.report_models.configs import report_model_config
    from cxr_irgen.report_models.decoders import build_decoder

    decoder = build_decoder(report_model_config("decoder", "r2gen-tiny"), vocab_size=20, max_positions=10, sentence_end=5)
    assert isinstance(decoder, R2GenDecoder) and decoder.d_model == 64
    assert report_model_config("decoder", "r2gen").memory_slots == 3
