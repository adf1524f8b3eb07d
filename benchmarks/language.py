"""Language-module speed: stage-1 training tokens/s and report generation reports/s, each vs a plain reference.

Both sides use the same BART (``configs/language/model/bart-tiny.yaml``: 2 layers, d = 128,
random weights, byte-level BPE trained on the reports) and real IU X-ray findings, measured
in the same run:

* training: :class:`ReportAutoencoder` steps (encoder → pooled token → decoder, AdamW) vs
  plain ``BartForConditionalGeneration(input_ids, attention_mask, labels)`` steps on the
  same batches (the usual seq2seq autoencoder, cross-attending to every encoder state).
  Tokens/s counts non-pad tokens.
* generation: :meth:`ReportAutoencoder.decode` of N embeddings in batches vs transformers
  ``generate`` one report at a time (batch 1, no batching), both greedy with the same
  ``max_length``, from the untrained weights with EOS suppressed, so every report is a fixed
  ``max_length`` tokens (``mean_generated_tokens``); the two must produce the same reports.

Usage: ``python benchmarks/language.py [--steps 20] [--reports 64] [--batch-size 32] [--max-length 64] [--device auto]``.
The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import torch
from omegaconf import OmegaConf

from cxr_irgen.data.iu_xray import load_iu_reports
from cxr_irgen.language.autoencoder import build_autoencoder

MODEL_CFG = Path(__file__).resolve().parents[1] / "configs" / "language" / "model" / "bart-tiny.yaml"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(step, batches, device) -> float:
    """Seconds for one optimizer step per batch (after one warm-up step)."""
    step(batches[0])
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    sync(device)
    return time.perf_counter() - start


def training_benchmark(model, texts: list[str], steps: int, batch_size: int, device) -> dict:
    batches = [{k: v.to(device) for k, v in model.tokenize(texts[i * batch_size : (i + 1) * batch_size]).items()} for i in range(steps)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    bart = model.bart
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run(loss_of):
        model.load_state_dict(state)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch):
            loss_of(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return time_training(step, batches, device)

    ours = run(lambda b: model(**b))
    plain = run(lambda b: bart(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)).loss)
    model.load_state_dict(state)
    return {"train_tokens": tokens, "ours_tokens_per_s": tokens / ours, "plain_tokens_per_s": tokens / plain, "train_speedup": plain / ours}


@torch.no_grad()
def generation_benchmark(model, texts: list[str], n: int, batch_size: int, max_length: int, device) -> dict:
    from transformers import GenerationConfig
    from transformers.modeling_outputs import BaseModelOutput

    model.eval()
    model.bart.final_logits_bias[0, model.tokenizer.eos_token_id] = -1e4  # no EOS: every report is max_length tokens
    embeddings = torch.cat([model.embed(texts[i : i + batch_size]) for i in range(0, n, batch_size)])[:n]
    sync(device)
    start = time.perf_counter()
    ours = model.decode(embeddings, max_length=max_length, batch_size=batch_size)
    sync(device)
    ours_s = time.perf_counter() - start

    config = model.bart.config
    generation = GenerationConfig(max_new_tokens=max_length, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                                  decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id)
    start = time.perf_counter()
    plain, generated_tokens = [], 0
    for embedding in embeddings:
        memory = BaseModelOutput(last_hidden_state=embedding.view(1, 1, -1))
        ids = model.bart.generate(encoder_outputs=memory, attention_mask=torch.ones(1, 1, dtype=torch.long, device=device), generation_config=generation)
        plain.append(model.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        generated_tokens += ids.shape[1] - 1
    sync(device)
    plain_s = time.perf_counter() - start
    return {
        "reports": n, "ours_reports_per_s": n / ours_s, "plain_reports_per_s": n / plain_s, "generate_speedup": plain_s / ours_s,
        "same_reports": sum(a == b for a, b in zip(ours, plain)) / n,
        "mean_generated_tokens": generated_tokens / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reports", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    texts = [t for t in load_iu_reports()["findings"].tolist() if t]
    torch.manual_seed(0)
    model = build_autoencoder(OmegaConf.load(MODEL_CFG), texts[:2000]).to(device)
    need = args.steps * args.batch_size
    train_texts = (texts * (need // len(texts) + 1))[:need]
    result = {"device": str(device), "model": "bart-tiny (2 layers, d=128, random weights)", "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "max_length": args.max_length}
    result.update(training_benchmark(model, train_texts, args.steps, args.batch_size, device))
    result.update(generation_benchmark(model, texts, args.reports, args.batch_size, args.max_length, device))
    print(f"training: ours {result['ours_tokens_per_s']:.0f} tok/s vs plain BART {result['plain_tokens_per_s']:.0f} tok/s")
    print(f"generation: ours {result['ours_reports_per_s']:.2f} reports/s vs one-at-a-time generate {result['plain_reports_per_s']:.2f} reports/s")
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else common.peak_rss_mb()
    print(json.dumps(common.result(
        "language", {"tokens_per_s": result["ours_tokens_per_s"], "reports_per_s": result["ours_reports_per_s"]},
        {"tokens_per_s": result["plain_tokens_per_s"], "reports_per_s": result["plain_reports_per_s"]},
        result["ours_tokens_per_s"] / result["plain_tokens_per_s"], "training tokens/s of the stage-1 autoencoder over plain BART (generation's ratio: generate_speedup)",
        peak_memory_mb=round(peak, 1), **result,
    )))


if __name__ == "__main__":
    main()
