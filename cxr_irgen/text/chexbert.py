"""CheXbert labeler backend (Smit et al., EMNLP 2020) from local files only.

Architecture of the released ``bert_labeler``: BERT → [CLS] hidden state → 13 linear
heads with 4 classes (blank, positive, negative, uncertain) and one head for No Finding
with 2 classes (blank, positive). The checkpoint (``chexbert.pth``) is a dict whose
``model_state_dict`` holds the weights with DataParallel's ``module.`` prefix; it is read
with ``torch.load(weights_only=True)``. The BERT architecture and tokenizer come from a
local ``bert-base-uncased`` directory (``config.json`` + ``vocab.txt``); nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cxr_irgen.data.labels import LABEL_INDEX, NUM_LABELS
from cxr_irgen.errors import UserError

# CheXbert's head order (No Finding last) and class index → label value.
CHEXBERT_CONDITIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices", "No Finding",
)
CLASS_VALUES = np.array([np.nan, 1.0, 0.0, -1.0], dtype=np.float32)
MAX_TOKENS = 512


class CheXbertModel(nn.Module):
    """BERT + 14 linear heads on the [CLS] state; ``forward`` returns 14 logit tensors (B, 4) / (B, 2)."""

    def __init__(self, bert_config):
        from transformers import BertModel

        super().__init__()
        self.bert = BertModel(bert_config)
        hidden = bert_config.hidden_size
        self.dropout = nn.Dropout(0.1)
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
        return [head(cls) for head in self.linear_heads]


class CheXbertLabeler:
    """Labels reports with a CheXbert checkpoint; output in this library's canonical order."""

    def __init__(self, model: CheXbertModel, tokenizer, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, bert_dir: str | Path, batch_size: int = 32) -> "CheXbertLabeler":
        from transformers import AutoTokenizer, BertConfig

        checkpoint, bert_dir = Path(str(checkpoint)), Path(str(bert_dir))
        if not checkpoint.is_file():
            raise UserError(f"labeler.checkpoint={checkpoint}: no such file; place CheXbert's chexbert.pth there (from the CheXbert release)")
        if not (bert_dir / "config.json").is_file():
            raise UserError(f"labeler.bert_dir={bert_dir}: place bert-base-uncased's config.json and vocab.txt in this directory")
        model = CheXbertModel(BertConfig.from_pretrained(str(bert_dir)))
        try:
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling errors have many types
            raise UserError(f"labeler.checkpoint={checkpoint} is not a readable CheXbert checkpoint: {str(err).splitlines()[0]}") from None
        state = saved.get("model_state_dict", saved) if isinstance(saved, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"labeler.checkpoint={checkpoint} holds no model_state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"labeler.checkpoint={checkpoint} does not match the BERT in {bert_dir} (missing e.g. {missing[:2]}, unexpected e.g. {unexpected[:2]})")
        return cls(model, AutoTokenizer.from_pretrained(str(bert_dir)), batch_size)

    @torch.no_grad()
    def label(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(N, 14) float32 labels, NaN blank, canonical CheXpert order."""
        from cxr_irgen.utils.progress import progress_bar

        out = np.full((len(texts), NUM_LABELS), np.nan, dtype=np.float32)
        order = [LABEL_INDEX[c] for c in CHEXBERT_CONDITIONS]
        for start in progress_bar(range(0, len(texts), self.batch_size), desc="chexbert", disable=not progress, dynamic_ncols=True):
            batch = [" ".join(str(t).split()) for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            logits = self.model(enc["input_ids"], enc["attention_mask"])
            classes = torch.stack([head.argmax(dim=1) for head in logits], dim=1).numpy()
            out[start:start + len(batch)][:, order] = CLASS_VALUES[classes]
        return out
