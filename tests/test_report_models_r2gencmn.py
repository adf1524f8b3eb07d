"""R2GenCMN's cross-modal memory: a hand-computed top-k response, both modalities read the one memory, and the
decoder trains on phantoms (tiny config, loss drops)."""

from __future__ import annotations

import json
import math

import torch

from cxr_irgen.report_models.r2gencmn import CrossModalMemory, R2GenCMNDecoder


def identity_memory(rows: list[list[float]], top_k: int) -> CrossModalMemory:
    """One head, d 2, every projection the identity: scores are x · m / sqrt(2), values the rows themselves."""
    memory = CrossModalMemory(slots=len(rows), d_model=2, heads=1, top_k=top_k, dropout=0.0).eval()
    with torch.no_grad():
        memory.memory.copy_(torch.tensor(rows))
        for layer in (memory.query, memory.key, memory.value, memory.out):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    return memory


def test_memory_response_keeps_the_top_k_rows_hand_computed():
    rows = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.0]]
    memory = identity_memory(rows, top_k=2)
    x = torch.tensor([[[1.0, 0.0]]])  # scores [1, 0, -1, 2] / sqrt(2): rows 3 and 0 are the top 2
    w3 = math.exp(2 / math.sqrt(2)) / (math.exp(2 / math.sqrt(2)) + math.exp(1 / math.sqrt(2)))
    expected = torch.tensor([[[w3 * 2.0 + (1 - w3) * 1.0, 0.0]]])
    with torch.no_grad():
        torch.testing.assert_close(memory(x), expected)
        memory.memory[1] = torch.tensor([0.0, -5.0])  # a row outside the top 2 changes: no effect
        torch.testing.assert_close(memory(x), expected)
        memory.memory[0] = torch.tensor([1.0, 1.0])  # a selected row changes: the response follows
        assert (memory(x) - expected).abs().max() > 0.1
        all_rows = identity_memory(rows, top_k=4)(x)  # top_k = every row: plain attention over the memory
    scores = torch.tensor([1.0, 0.0, -1.0, 2.0]) / math.sqrt(2)
    torch.testing.assert_close(all_rows[0, 0], torch.softmax(scores, 0) @ torch.tensor(rows))


def test_visual_and_text_sides_read_the_same_memory():
    torch.manual_seed(0)
    decoder = R2GenCMNDecoder(vocab_size=11, max_positions=12, d_model=16, ffn=16, heads=2, layers=1, memory_slots=8, top_k=3, dropout=0.0).eval()
    visual, tokens = torch.randn(2, 5, 16), torch.randint(4, 11, (2, 6))
    with torch.no_grad():
        encoded = decoder.prepare(visual)
        logits = decoder.logits(tokens, encoded)
        decoder.memory.memory.mul_(-3.0)
        assert (decoder.prepare(visual) - encoded).abs().amax() > 1e-3  # the visual side changed
        assert (decoder.logits(tokens, encoded) - logits).abs().amax() > 1e-3  # the text side too, same image encoding
    assert logits.shape == (2, 6, 11)


def test_r2gencmn_trains_on_phantoms(phantom_root, tmp_path):
    from cxr_irgen.cli import run_command
    from cxr_irgen.report_models.configs import report_model_config
    from cxr_irgen.report_models.factory import load_report_generator

    assert (report_model_config("decoder", "r2gencmn").memory_slots, report_model_config("decoder", "r2gencmn").top_k) == (2048, 32)
    run_command("train-report-model", [f"data.root={phantom_root}", "data.image_size=64", "encoder=resnet-tiny", "+encoder_args.frozen=true", "decoder=r2gencmn-tiny",
                                       "trainer=cpu-tiny", "trainer.max_steps=25", "trainer.batch_size=16", "trainer.lr=5e-3",
                                       "trainer.checkpoint_every=1000", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path}"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["decoder"] == "r2gencmn-tiny" and metrics["train_loss_last"] < 0.6 * metrics["train_loss_first"], metrics
    assert len(load_report_generator(tmp_path)(torch.rand(2, 1, 64, 64), num_beams=2, max_length=10)) == 2
