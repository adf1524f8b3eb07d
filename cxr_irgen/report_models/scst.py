"""Self-critical sequence training (Rennie et al., CVPR 2017) with a pluggable report reward.

For each image one report is sampled and one decoded greedily; the loss raises the log-probability
of the sampled report in proportion to how much its reward beats the greedy report's:

    loss = -(r(sample) - r(greedy)) · mean_t log p(sample_t | sample_<t, image)

The model is seen through ``logits_fn(tokens (B, T)) -> (B, T, V)`` (teacher-forced next-token
logits for the images of the batch, closed over by the caller), so any decoder of this package
can be fine-tuned. Rewards are ``reward(hypotheses, references) -> (B,)`` arrays:

- :class:`LabelerF1Reward`: per-report F1 between the in-house labeler's positive labels of the
  report and of its reference (nothing to download);
- :class:`BertScoreReward`: BERTScore F1 (greedy cosine matching of contextual token embeddings,
  no idf weighting, no baseline rescaling) with a BERT-style model from a local directory; only
  when that directory holds a model (ifcc used ``distilroberta-base``).

``cxr-irgen train-report-scst model_run=RUN reward.name=labeler_f1`` fine-tunes a
``train-report-model`` run (M2Trans's second stage) on the shared trainer and saves the tuned
generator in the new run's ``report_model/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
RewardFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@torch.no_grad()
def sample_sequences(logits_fn: LogitsFn, batch_size: int, bos_id: int, eos_id: int, pad_id: int, max_length: int,
                     greedy: bool, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Tokens (B, 1 + L) starting with BOS, sampled (or argmax) until EOS or ``max_length``; padded after EOS."""
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_length):
        logits = logits_fn(tokens)[:, -1].float()
        if greedy:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == eos_id
        if done.all():
            break
    return tokens


def sequence_log_probs(logits_fn: LogitsFn, tokens: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities (B, L) of ``tokens[:, 1:]`` under teacher forcing, and their mask (EOS included)."""
    logits = logits_fn(tokens[:, :-1]).float()
    targets = tokens[:, 1:]
    log_probs = F.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return log_probs, (targets != pad_id).float()


def scst_loss(logits_fn: LogitsFn, references: Sequence[str], decode: Callable[[torch.Tensor], list[str]],
              reward: RewardFn, bos_id: int, eos_id: int, pad_id: int, max_length: int,
              generator: torch.Generator | None = None, device=None) -> tuple[torch.Tensor, dict[str, float]]:
    """SCST loss for one batch with a greedy baseline; ``decode(tokens (B, L)) -> texts`` (BOS dropped, stops at EOS).

    Returns the loss and ``{"reward_sample", "reward_greedy"}`` batch means.
    """
    batch = len(references)
    sampled = sample_sequences(logits_fn, batch, bos_id, eos_id, pad_id, max_length, False, generator, device)
    greedy = sample_sequences(logits_fn, batch, bos_id, eos_id, pad_id, max_length, True, None, device)
    r_sample = np.asarray(reward(decode(sampled[:, 1:]), references), dtype=np.float32)
    r_greedy = np.asarray(reward(decode(greedy[:, 1:]), references), dtype=np.float32)
    advantage = torch.as_tensor(r_sample - r_greedy, device=sampled.device)
    log_probs, mask = sequence_log_probs(logits_fn, sampled, pad_id)
    per_report = (log_probs * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    loss = -(advantage * per_report).mean()
    return loss, {"reward_sample": float(r_sample.mean()), "reward_greedy": float(r_greedy.mean())}


class LabelerF1Reward:
    """Per-report F1 of the labeler's positive observations (14, No Finding included) against the reference's.

    ``mapping`` is a :func:`cxr_irgen.text.chexpert_f1.binarise` name; a pair with no positive on
    either side scores 1. Reference labels are cached, as they are the same every epoch.
    """

    def __init__(self, mapping: str = "positive_only", backend: str = "rules"):
        self.mapping, self.backend = mapping, backend
        self._reference_cache: dict[str, np.ndarray] = {}

    def _labels(self, texts: Sequence[str]) -> np.ndarray:
        from cxr_irgen.text.chexpert_f1 import binarise
        from cxr_irgen.text.labeler import label_reports

        return binarise(label_reports(list(texts), backend=self.backend), self.mapping)

    def __call__(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        unseen = [r for r in dict.fromkeys(references) if r not in self._reference_cache]
        if unseen:
            self._reference_cache.update(zip(unseen, self._labels(unseen)))
        truth = np.stack([self._reference_cache[r] for r in references])
        predicted = self._labels(hypotheses)
        tp = (predicted & truth).sum(1)
        denominator = predicted.sum(1) + truth.sum(1)
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0).astype(np.float32)


class BertScoreReward:
    """BERTScore F1 per pair from a local Hugging Face model directory (tokenizer + encoder), no download.

    Token embeddings are the hidden states of ``layer`` (default the last), special tokens dropped;
    precision/recall are the mean best cosine match of each hypothesis/reference token.
    """

    def __init__(self, model_dir: str | Path, layer: int | None = None, device: str | torch.device = "cpu", max_length: int = 256):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise UserError(
                f"BERTScore reward needs a local model: no config.json in {model_dir}. Save one there on a connected machine "
                "(e.g. AutoModel/AutoTokenizer.from_pretrained('distilroberta-base').save_pretrained(DIR)) or use reward=labeler_f1"
            )
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval().requires_grad_(False)
        self.layer, self.device, self.max_length = layer, device, max_length

    @torch.no_grad()
    def _embed(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_special_tokens_mask=True).to(self.device)
        special = enc.pop("special_tokens_mask").bool()
        out = self.model(**enc, output_hidden_states=self.layer is not None)
        hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        keep = enc["attention_mask"].bool() & ~special
        return F.normalize(hidden.float(), dim=-1), keep

    def __call__(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        hyp, hyp_keep = self._embed(hypotheses)
        ref, ref_keep = self._embed(references)
        similarity = hyp @ ref.transpose(1, 2)  # (B, Th, Tr)
        similarity = similarity.masked_fill(~ref_keep[:, None, :], -2.0).masked_fill(~hyp_keep[:, :, None], -2.0)
        precision = (similarity.amax(2) * hyp_keep).sum(1) / hyp_keep.sum(1).clamp_min(1)
        recall = (similarity.amax(1) * ref_keep).sum(1) / ref_keep.sum(1).clamp_min(1)
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-8)
        empty = (hyp_keep.sum(1) == 0) | (ref_keep.sum(1) == 0)
        return torch.where(empty, torch.zeros_like(f1), f1).cpu().numpy()


def build_reward(name: str, **kwargs) -> RewardFn:
    """``labeler_f1`` (default, offline) or ``bertscore`` (needs ``model_dir``)."""
    if name == "labeler_f1":
        return LabelerF1Reward(**kwargs)
    if name == "bertscore":
        return BertScoreReward(**kwargs)
    raise UserError(f"scst.reward={name!r}: use labeler_f1 or bertscore")


def run(cfg) -> Path:
    """``train-report-scst``: SCST fine-tuning of a ``train-report-model`` run (decoders that score whole prefixes)."""
    import json

    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.data.datasets import collate
    from cxr_irgen.report_models.decoder_base import TokenDecoder
    from cxr_irgen.report_models.factory import load_report_generator
    from cxr_irgen.report_models.interface import RUN_SUBDIR
    from cxr_irgen.report_models.model import EncoderDecoderGenerator
    from cxr_irgen.report_models.train import config_args, evaluate_heldout, loss_summary, report_pairs
    from cxr_irgen.report_models.vocabulary import BOS, EOS, PAD
    from cxr_irgen.utils.rundir import run_dir
    from cxr_irgen.utils.training import make_accelerator, train

    if not cfg.model_run:
        raise UserError("model_run=??? : give the run dir of a `cxr-irgen train-report-model` run (the NLL stage)")
    generator = load_report_generator(cfg.model_run)
    if not isinstance(generator, EncoderDecoderGenerator) or not isinstance(generator.model.decoder, TokenDecoder):
        raise UserError(f"{cfg.model_run}: SCST fine-tunes encoder x decoder runs with a transformer, m2 or r2gen decoder")
    reward = build_reward(str(cfg.reward.name), **config_args(cfg.reward.get("args")))
    out = run_dir(cfg)
    table = load_table(cfg.data)
    sections = load_sections(table, cfg.data)
    model, vocab = generator.model, generator.vocab
    pairs = report_pairs(table, sections, "train", cfg.views, str(cfg.text), model.encoder.image_size, bool(cfg.data.skip_bad))
    accelerator = make_accelerator(cfg.trainer, int(cfg.seed))
    rewards: list[dict[str, float]] = []

    def decode(tokens: torch.Tensor) -> list[str]:
        return [vocab.decode(row) for row in tokens.tolist()]

    def loss_fn(m, batch: dict) -> torch.Tensor:
        m = accelerator.unwrap_model(m)
        context = m.decoder.prepare(m.memory(batch))
        loss, stats = scst_loss(lambda tokens: m.decoder.logits(tokens, context), batch["text"], decode, reward,
                                BOS, EOS, PAD, int(cfg.max_length), device=context.device)
        rewards.append(stats)
        return loss

    result = train(accelerator, model, pairs, loss_fn, cfg.trainer, out, int(cfg.seed), collate_fn=collate)
    model = accelerator.unwrap_model(model).eval()
    if accelerator.is_main_process:
        tuned = EncoderDecoderGenerator(model, vocab, generator.decoding)
        tuned.save_pretrained(out / RUN_SUBDIR)
        window = min(10, len(rewards))
        greedy = [r["reward_greedy"] for r in rewards]
        metrics = {"model_run": str(cfg.model_run), "reward": str(cfg.reward.name), "steps": result.step, **loss_summary(result.losses),
                   "reward_greedy_first": float(np.mean(greedy[:window])) if greedy else None,
                   "reward_greedy_last": float(np.mean(greedy[-window:])) if greedy else None}
        heldout = table[(table["split"] == "validate") & table["view"].isin(list(cfg.views))]
        if int(cfg.evaluation.max_reports) and len(heldout):
            validate = report_pairs(table, sections, "validate", cfg.views, str(cfg.text), model.encoder.image_size, bool(cfg.data.skip_bad))
            metrics.update(evaluate_heldout(tuned, validate, cfg.evaluation, out))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("metrics: %s", OmegaConf.create(metrics))
    return out
