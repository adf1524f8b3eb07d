"""DVE + Transformer: training tokens/s and beam-search reports/s of the library vs a plain PyTorch loop.

Both sides run the same model (same weights, size and batch) on synthetic data (random
images, random 40-word reports over a 1,000-word vocabulary):

* training: the shared trainer (:func:`cxr_irgen.utils.training.train`: Accelerate, seeded
  resumable sampler, grad clipping, progress bar, TensorBoard) vs ``zero_grad / loss /
  backward / step`` over a plain DataLoader; target tokens (non-pad) per second, timed
  from the end of the first step to the last step (the final checkpoint write excluded);
* decoding: :class:`EncoderDecoderGenerator` (the shared beam search, beam 4) vs a
  per-image beam search over the same decoder; reports per second, and the fraction of
  identical reports.

``--size tiny`` (dve-tiny + transformer-tiny at 64 px, the CPU default) or ``paper``
(DenseNet-121 at 294 px + d_model 512, the GPU default). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from omegaconf import OmegaConf

from cxr_irgen.report_models.beam_search import BeamSettings
from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model
from cxr_irgen.report_models.vocabulary import BOS, EOS, PAD, Vocabulary

SIZES = {"tiny": ("dve-tiny", "transformer-tiny"), "paper": ("dve", "transformer")}


class SyntheticPairs(torch.utils.data.Dataset):
    def __init__(self, n: int, image_size: int, words: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, image_size, image_size, generator=g)
        ids = torch.randint(0, 1000, (n, words), generator=g)
        self.texts = [" ".join(f"w{i}" for i in row.tolist()) for row in ids]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "text": self.texts[i]}


def library_training(model, data, collate, steps: int, batch: int, device) -> float:
    """Seconds per step of the shared trainer, from step 1 to step ``steps``."""
    from cxr_irgen.utils.training import make_accelerator, train

    cfg = OmegaConf.merge(OmegaConf.load("configs/trainer/default.yaml"), {"max_steps": steps, "batch_size": batch, "lr": 5e-4,
                          "checkpoint_every": 10**9, "log_every": 10**9, "mixed_precision": "no"})
    marks = []
    accelerator = make_accelerator(cfg, 0)
    with tempfile.TemporaryDirectory() as out:
        train(accelerator, model, data, lambda m, b: m(b), cfg, out, 0, collate_fn=collate,
              on_step=lambda step, m: (torch.cuda.synchronize() if device.type == "cuda" else None, marks.append(time.perf_counter())))
    return (marks[-1] - marks[0]) / (len(marks) - 1)


def reference_training(model, data, collate, steps: int, batch: int, device) -> float:
    """Seconds per step of a plain loop."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate)
    model.to(device).train()
    marks, done = [], 0
    while done < steps:
        for b in loader:
            b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
            optimizer.zero_grad()
            model(b).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            done += 1
            if done == steps:
                break
    return (marks[-1] - marks[0]) / (len(marks) - 1)


@torch.no_grad()
def reference_beam(model, image: torch.Tensor, beam: int, max_length: int) -> list[int]:
    """Textbook beam search for one image: a list of (score, ids) hypotheses, finished ones set aside."""
    memory = model.projection(model.encoder(image[None]))
    alive, done = [(0.0, [BOS])], []
    for _ in range(max_length):
        tokens = torch.tensor([ids for _, ids in alive], device=image.device)
        logp = torch.log_softmax(model.decoder.logits(tokens, memory.expand(len(alive), -1, -1))[:, -1].float(), -1)
        logp[:, PAD] = logp[:, BOS] = float("-inf")
        candidates = [(score + logp[i, w].item(), ids + [w]) for i, (score, ids) in enumerate(alive) for w in logp[i].topk(beam).indices.tolist()]
        candidates.sort(key=lambda c: -c[0])
        pool = sorted(done + candidates, key=lambda c: -c[0])[:beam]
        done = [c for c in pool if c[1][-1] == EOS]
        alive = [c for c in pool if c[1][-1] != EOS]
        if not alive:
            break
    best = max(done + alive, key=lambda c: c[0])[1]
    return [i for i in best[1:] if i != EOS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="tiny on CPU, paper on GPU by default")
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--reports", type=int, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("paper" if device.type == "cuda" else "tiny")
    steps = args.steps or (30 if device.type == "cuda" else 10)
    n_reports = args.reports or (96 if device.type == "cuda" else 16)
    words, max_length = 40, 60

    encoder, decoder = SIZES[size]
    vocab = Vocabulary([*("<pad>", "<bos>", "<unk>", "<eos>"), *(f"w{i}" for i in range(1000))], max_words=128)
    torch.manual_seed(0)
    model = build_report_model(encoder, decoder, vocab)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = SyntheticPairs(max(args.batch * (steps + 2), n_reports), model.encoder.image_size, words)

    def collate(items):
        return {"pixel_values": torch.stack([i["pixel_values"] for i in items]), "targets": vocab.encode([i["text"] for i in items])}

    tokens_per_step = args.batch * (words + 1)
    library_s = library_training(model, data, collate, steps, args.batch, device)
    model.load_state_dict(initial)
    reference_s = reference_training(model.to(device), data, collate, steps, args.batch, device)

    model.load_state_dict(initial)
    model.to(device).eval()
    generator = EncoderDecoderGenerator(model, vocab)
    images = data.images[:n_reports].to(device)
    start = time.perf_counter()
    ours = generator(images, batch_size=args.batch, num_beams=4, max_length=max_length)
    library_beam_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = [vocab.decode(reference_beam(model, image, 4, max_length)) for image in images]
    reference_beam_s = time.perf_counter() - start
    settings = BeamSettings(4, max_length)
    print(json.dumps({
        "benchmark": "report_models", "model": f"{encoder}+{decoder}", "device": str(device), "batch": args.batch,
        "train_steps": steps, "train_tokens_per_s": {"library": tokens_per_step / library_s, "reference": tokens_per_step / reference_s},
        "beam": {"beam_size": settings.beam_size, "max_length": settings.max_length, "reports": n_reports},
        "beam_reports_per_s": {"library": n_reports / library_beam_s, "reference": n_reports / reference_beam_s},
        "identical_reports": sum(a == b for a, b in zip(ours, theirs)) / n_reports,
    }))


if __name__ == "__main__":
    main()
