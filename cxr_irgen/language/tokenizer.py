"""Report tokenizers: the pretrained BART one when given, else a byte-level BPE trained offline.

The trained tokenizer has BART's special tokens at BART's ids (``<s>`` 0, ``<pad>`` 1,
``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4), wraps every text as ``<s> ... </s>`` and is saved
with the model, so ``AutoTokenizer.from_pretrained(model_dir)`` reloads it with no network.
"""

from __future__ import annotations

from typing import Iterable

from cxr_irgen.errors import UserError
from cxr_irgen.vision.loading import load_pretrained

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` with BART's special tokens."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    if not texts:
        raise UserError("cannot train a tokenizer: no report text in the training selection (check data.root and text=)")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", SPECIAL_TOKENS.index("</s>")), ("<s>", SPECIAL_TOKENS.index("<s>")))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>"
    )


def load_tokenizer(source: str):
    """The tokenizer saved in a local directory or under a hub id (offline: one line naming the files)."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, str(source), None, "tokenizer.json (or vocab.json + merges.txt) and tokenizer_config.json")


def token_length_summary(tokenizer, texts: list[str], max_length: int) -> dict:
    """Token counts of ``texts`` (special tokens included, no truncation): n, mean, median, p90, p99, max and
    ``truncated`` (the share longer than ``max_length``, which training would cut)."""
    import numpy as np

    if not texts:
        return {"n": 0, "max_length": int(max_length), "truncated": 0.0}
    lengths = np.array([len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]])
    return {
        "n": int(len(lengths)), "mean": round(float(lengths.mean()), 1), "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)), "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max()),
        "max_length": int(max_length), "truncated": round(float((lengths > max_length).mean()), 5),
    }
