"""SCST: the labeler-F1 reward rises on a tiny conditional language model; rewards behave; BERTScore from a local model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.scst import BertScoreReward, LabelerF1Reward, build_reward, sample_sequences, scst_loss

WORDS = ["<pad>", "<bos>", "<eos>", "cardiomegaly", "pleural", "effusion", "pulmonary", "edema", "the", "and", "is", "."]
PAD, BOS, EOS = 0, 1, 2
REFERENCES = ["Cardiomegaly.", "Pleural effusion.", "Pulmonary edema."]


def decode(tokens: torch.Tensor) -> list[str]:
    texts = []
    for row in tokens.tolist():
        words = []
        for t in row:
            if t in (EOS, PAD):
                break
            words.append(WORDS[t])
        texts.append(" ".join(words))
    return texts


class BigramByContext(nn.Module):
    """logits of the next token = table[context, previous token]: (B, T) → (B, T, V)."""

    def __init__(self, contexts: int, vocab: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(contexts, vocab, vocab))

    def forward(self, context: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[context[:, None], tokens]


def test_labeler_reward_is_per_report_f1():
    reward = LabelerF1Reward()
    got = reward(["Cardiomegaly and pleural effusion.", "Pulmonary edema.", "The lungs are clear.", ""],
                 ["Cardiomegaly.", "Pleural effusion.", "No acute process.", "Pleural effusion."])
    np.testing.assert_allclose(got, [2 / 3, 0.0, 1.0, 0.0])  # 1 of 2 right; wrong; both No Finding; nothing said


def test_scst_with_the_labeler_reward_raises_the_training_reward():
    torch.manual_seed(0)
    model = BigramByContext(len(REFERENCES), len(WORDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.3)
    reward = build_reward("labeler_f1")
    context = torch.arange(len(REFERENCES)).repeat(4)  # 12 reports per step
    references = [REFERENCES[c] for c in context.tolist()]
    generator = torch.Generator().manual_seed(0)

    def greedy_reward() -> float:
        with torch.no_grad():
            tokens = sample_sequences(lambda t: model(context, t), len(context), BOS, EOS, PAD, 6, greedy=True)
        return float(reward(decode(tokens[:, 1:]), references).mean())

    before = greedy_reward()
    for _ in range(20):
        loss, stats = scst_loss(lambda t: model(context, t), references, decode, reward, BOS, EOS, PAD, 6, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = greedy_reward()
    assert before < 0.2 and after > before + 0.5, (before, after)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS[3:], "no", "clear", "lungs"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(directory)
    return directory


def test_bertscore_reward_from_a_local_model(tiny_bert_dir, tmp_path):
    reward = build_reward("bertscore", model_dir=tiny_bert_dir)
    assert isinstance(reward, BertScoreReward)
    same, other = reward(["pleural effusion .", "pleural effusion ."], ["pleural effusion .", "cardiomegaly is clear"])
    assert same == pytest.approx(1.0, abs=1e-5) and other < same
    with pytest.raises(UserError, match="no config.json"):
        build_reward("bertscore", model_dir=tmp_path)
    with pytest.raises(UserError, match="labeler_f1 or bertscore"):
        build_reward("bleu")
