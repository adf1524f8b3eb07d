"""The paper's ablation claims, tested on phantoms (where the truth is known) with several seeds per arm.

    .venv/bin/python benchmarks/paper_claims.py [--seeds 3] [--seed K] [--out DIR] [--threads 2] [--smoke]

Every arm is the demo's recipe (``configs/demo.yaml``: tiny U-Net, 2-layer BART, tiny ViT prior, a
phantom classifier), trained with fewer steps, once per seed, through the same commands a user
runs (``train-vision``, ``generate``, ``evaluate``, ``train-language``, ``train-classifier``):

- reference image vs text only (Tab. 1-2): ``vision.model.conditioning.mode=concat`` (text +
  reference-image token) vs ``text``; 96 pairs for the 12 most frequent test label vectors, FID on
  the phantom classifier's features against real test phantoms (lower is better) and the AUROC
  protocol with that classifier on the generated images (mean over pathologies);
- mean vs BOS vs EOS pooling (Fig. 5): ``model.pooling``; BLEU-4 of held-out reports reconstructed
  through the one-token bottleneck;
- mse+cos vs mse vs cos (Tab. 5): ``prior.loss`` on one stage-1 model per seed (mean pooling);
  CheXpert F1 (rules labeler, micro over 14, positive only) of the reports written for held-out
  images vs their own reports;
- CLIP embedding vs latent vs image as the prior's input (Tab. 5): ``prior.input``, loss mse+cos,
  same F1. No CLIP weights exist offline: the CLIP tower of the tiny configs has random weights,
  so this arm compares a random projection, and the table says so.

For each claim: the per-seed difference of the paper's better arm minus the other (signed so
that positive means the paper's direction), its mean over seeds and a 95% t-interval over seeds
(paired by seed); "confirmed at this scale" when the interval lies above 0, "not confirmed at
this scale" otherwise (with "opposite effect" when it lies below 0). Finished runs are kept and
skipped when the command is run again with the same ``--out``; ``--seed K`` runs one seed's arms
only, so seeds can run in parallel processes before one call without it writes the table.
Writes ``claims.md`` and ``claims.json`` into ``--out``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import common
import numpy as np

SCALES = {  # steps and sizes: full (the README run) and --smoke (the test)
    "full": {"phantoms": 1200, "size": 64, "vision_steps": 150, "batch": 16, "generate_n": 6, "label_sets": 12, "sampler_steps": 20,
             "autoencoder_steps": 200, "prior_steps": 200, "classifier_steps": 200, "real_n": 200, "auroc_n": 100, "max_reports": 500},
    "smoke": {"phantoms": 120, "size": 32, "vision_steps": 2, "batch": 8, "generate_n": 2, "label_sets": 3, "sampler_steps": 2,
              "autoencoder_steps": 2, "prior_steps": 2, "classifier_steps": 2, "real_n": 8, "auroc_n": 8, "max_reports": 8},
}
POOLINGS = ("mean", "bos", "eos")
LOSSES = ("mse+cos", "mse", "cos")
INPUTS = ("clip", "latent", "image")
DONE = "paper_claims_step.done"


def run_step(out: Path, command: str, args: list[str]) -> Path:
    """``cxr-irgen <command> <args>`` into ``out`` unless an earlier call finished it there; returns ``out``."""
    from cxr_irgen.cli import run_command

    if not (out / DONE).is_file():
        started = time.perf_counter()
        run_command(command, [*args, f"hydra.run.dir={out}"])
        (out / DONE).write_text(f"{time.perf_counter() - started:.1f} s\n")
    return out


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def report_f1(prior_run: Path) -> float:
    """CheXpert F1 (rules labeler, micro 14, positive only) of the prior run's held-out reports vs their own reports."""
    import pandas as pd

    from cxr_irgen.eval.chexpert_f1 import chexpert_f1_reports

    frame = pd.read_csv(prior_run / "reports.csv", keep_default_na=False)
    return chexpert_f1_reports(frame["generated"].tolist(), frame["reference"].tolist(), n_bootstrap=0)["positive_only"]["micro_14"]["value"]


def seed_interval(differences: list[float]) -> tuple[float, list[float] | None]:
    """Mean of per-seed differences and its 95% t-interval over seeds (None with one seed)."""
    from scipy.stats import t

    d = np.asarray(differences, np.float64)
    if len(d) < 2:
        return float(d.mean()), None
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]


def verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "not confirmed at this scale (one seed: no interval)"
    if ci[0] > 0:
        return "confirmed at this scale"
    return "not confirmed at this scale" + (" (opposite effect)" if ci[1] < 0 else "")


def compare(claim: str, source: str, metric: str, values: dict[str, list[float]], better: str, other: str, higher_is_better: bool, note: str = "") -> dict:
    """One row: the paper's ``better`` arm vs ``other`` on ``metric``, per-seed values of every arm in ``values``."""
    row = {"claim": claim, "source": source, "metric": metric, "better": better, "other": other, "higher_is_better": higher_is_better,
           "per_seed": {arm: values[arm] for arm in (better, other)}, "note": note}
    if any(v is None for arm in (better, other) for v in values[arm]):
        return {**row, "effect": None, "ci95": None, "verdict": "not measured: the metric is undefined in some seed (see per_seed)"}
    sign = 1.0 if higher_is_better else -1.0
    effect, ci = seed_interval([sign * (a - b) for a, b in zip(values[better], values[other])])
    return {**row, "effect": effect, "ci95": ci, "verdict": verdict(ci)}


def claims_table(rows: list[dict], seeds: int) -> str:
    header = ["claim (paper)", "metric", "paper's better arm: mean over seeds", "other arm", "effect (better − other, paper's direction > 0)",
              f"95% CI over {seeds} seeds", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r["ci95"] else "–"
        arm = lambda name: f"{name}: {np.mean(r['per_seed'][name]):.3f}" if None not in r["per_seed"][name] else f"{name}: –"  # noqa: E731
        effect = "–" if r["effect"] is None else f"{r['effect']:+.3f}"
        lines.append(f"| {r['claim']} ({r['source']}) | {r['metric']} | {arm(r['better'])} | {arm(r['other'])} | {effect} | {ci} | "
                     f"{r['verdict']}{' — ' + r['note'] if r['note'] else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="run only this seed's arms (seeds in parallel processes), no table")
    parser.add_argument("--out", type=Path, default=Path("outputs/paper_claims"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps per run: checks the pipeline, not the claims")
    args = parser.parse_args(argv)
    import torch

    from cxr_irgen.data.phantoms import make_phantoms
    from cxr_irgen.demo import test_label_sets

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scale = SCALES["smoke" if args.smoke else "full"]
    started = time.perf_counter()
    out = args.out.resolve()
    data = out / "phantoms"
    if not (data / DONE).is_file():
        make_phantoms(data, n=scale["phantoms"], seed=0, size=scale["size"])
        (data / DONE).write_text("built\n")
    on_data = [f"data.root={data}"]
    tiny = ["trainer=cpu-tiny", "trainer.checkpoint_every=100000", f"trainer.batch_size={min(16, scale['batch'])}"]
    classifier = run_step(out / "classifier", "train-classifier", [
        *on_data, *tiny, f"trainer.max_steps={scale['classifier_steps']}", f"resolution={min(32, scale['size'])}", "classifier.growth_rate=8",
        "classifier.block_config=[2,2,2]", "classifier.num_init_features=16", f"protocol_n={scale['auroc_n']}"])
    labels_csv = out / "test_labels.csv"
    test_label_sets(data, scale["label_sets"]).to_csv(labels_csv, index=False)
    language = [*on_data, *tiny, "language/model=bart-tiny", "language/prior=vit-tiny", f"data.image_size={scale['size']}",
                f"evaluation.max_reports={scale['max_reports']}", "evaluation.max_length=60"]
    values: dict[str, dict[str, list[float]]] = {k: {} for k in ("fid", "auroc", "bleu", "loss_f1", "input_f1")}
    for seed in range(args.seeds) if args.seed is None else [args.seed]:
        at = out / f"seed-{seed}"
        for mode in ("concat", "text"):
            vision = run_step(at / f"vision-{mode}", "train-vision", [
                *on_data, "vision/model=unet-tiny", *tiny, f"trainer.max_steps={scale['vision_steps']}", f"trainer.batch_size={scale['batch']}", "trainer.lr=2e-3",
                f"vision.model.conditioning.mode={mode}", "sample_every=0", f"seed={seed}"])
            generated = run_step(at / f"generate-{mode}", "generate", [
                f"vision.checkpoint={vision}", f"labels_file={labels_csv}", f"n={scale['generate_n']}", "mode=images", "vision.scheduler=ddim",
                f"vision.steps={scale['sampler_steps']}", f"seed={seed}"])
            scored = metrics_of(run_step(at / f"evaluate-{mode}", "evaluate", [
                *on_data, f"generated={generated}", "eval.metrics=[fid,auroc]", "eval.fid.features=classifier", f"eval.fid.classifier={classifier}",
                f"eval.auroc.classifier={classifier}", "eval.auroc.real=false", f"eval.auroc.n={scale['auroc_n']}", f"eval.real.n={scale['real_n']}",
                "eval.real.views=[PA,AP]"]))
            values["fid"].setdefault(mode, []).append(scored["fid"]["value"])
            values["auroc"].setdefault(mode, []).append(scored["auroc"]["generated"]["mean"])
        autoencoders = {}
        for pooling in POOLINGS:
            autoencoders[pooling] = run_step(at / f"autoencoder-{pooling}", "train-language", [
                *language, "stage=autoencoder", f"model.pooling={pooling}", "model.word_dropout=0.3", f"trainer.max_steps={scale['autoencoder_steps']}",
                f"seed={seed}"])
            values["bleu"].setdefault(pooling, []).append(metrics_of(autoencoders[pooling])["reconstruction_bleu4"])
        for loss, prior_input in [(loss, "image") for loss in LOSSES] + [("mse+cos", i) for i in INPUTS if i != "image"]:
            prior = run_step(at / f"prior-{prior_input}-{loss}", "train-language", [
                *language, "stage=prior", f"autoencoder={autoencoders['mean']}", f"prior.loss={loss}", f"prior.input={prior_input}",
                f"trainer.max_steps={scale['prior_steps']}", "trainer.lr=1e-3", f"seed={seed}"])
            f1 = report_f1(prior)
            if prior_input == "image":
                values["loss_f1"].setdefault(loss, []).append(f1)
            if loss == "mse+cos":
                values["input_f1"].setdefault(prior_input, []).append(f1)
    if args.seed is not None:
        return {"seed": args.seed, "values": values}
    random_clip = "the CLIP tower has random weights here (no CLIP weights offline): a random projection, not CLIP"
    rows = [
        compare("reference image improves image quality", "Tab. 1", "FID (phantom-classifier features)", values["fid"], "concat", "text", False),
        compare("reference image improves class fidelity", "Tab. 2", "mean AUROC on generated images", values["auroc"], "concat", "text", True),
        *[compare("mean pooling reconstructs best", "Fig. 5", "reconstruction BLEU-4", values["bleu"], "mean", other, True) for other in ("bos", "eos")],
        *[compare("mse+cos prior loss is best", "Tab. 5", "report CheXpert F1 (micro 14)", values["loss_f1"], "mse+cos", other, True) for other in ("mse", "cos")],
        *[compare("CLIP embedding is the best prior input", "Tab. 5", "report CheXpert F1 (micro 14)", values["input_f1"], "clip", other, True, random_clip)
          for other in ("latent", "image")],
    ]
    table = claims_table(rows, args.seeds)
    wall = time.perf_counter() - started
    summary = {"benchmark": "paper_claims", "scale": "smoke" if args.smoke else "full", "seeds": args.seeds, "sizes": scale, "claims": rows,
               "values": values, "wall_s": round(wall, 1), "threads": args.threads, "out": str(out), "machine": common.machine(), "command": common.command()}
    (out / "claims.md").write_text(table)
    (out / "claims.json").write_text(json.dumps(summary, indent=1))
    print(table)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
