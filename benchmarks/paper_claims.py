"""The paper's ablation claims, tested on phantoms (where the truth is known) with several seeds per arm.

    .venv/bin/python benchmarks/paper_claims.py [--seeds 3] [--seed K] [--part P] [--out DIR] [--threads 2] [--smoke]

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
skipped when the command is run again with the same ``--out``; ``--seed K`` and ``--part vision|autoencoders|priors``
run only part of the arms, so parts can run in parallel processes (a step another process is running is
waited for) before one plain call writes the table; ``--table-only`` writes it from the runs finished so far
(a comparison then uses the seeds both arms finished, and says how many).
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
             "autoencoder_steps": 120, "prior_steps": 120, "classifier_steps": 200, "real_n": 200, "auroc_n": 100, "max_reports": 500},
    "smoke": {"phantoms": 120, "size": 32, "vision_steps": 2, "batch": 8, "generate_n": 2, "label_sets": 3, "sampler_steps": 2,
              "autoencoder_steps": 2, "prior_steps": 2, "classifier_steps": 2, "real_n": 8, "auroc_n": 8, "max_reports": 8},
}
POOLINGS = ("mean", "bos", "eos")
LOSSES = ("mse+cos", "mse", "cos")
INPUTS = ("clip", "latent", "image")
DONE = "paper_claims_step.done"


def run_step(out: Path, command: str, args: list[str]) -> Path:
    """``cxr-irgen <command> <args>`` into ``out`` unless an earlier call finished it there; returns ``out``.

    A step another process is running (``<out>.running`` exists; a killed process leaves it: delete it) is waited for.
    """
    from cxr_irgen.cli import run_command

    lock = out.parent / f"{out.name}.running"
    while not (out / DONE).is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(5)
            continue
        try:
            started = time.perf_counter()
            run_command(command, [*args, f"hydra.run.dir={out}"])
            (out / DONE).write_text(f"{time.perf_counter() - started:.1f} s\n")
        finally:
            lock.unlink()
    return out


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def report_f1(prior_run: Path) -> float:
    """CheXpert F1 (rules labeler, micro 14, positive only) of the prior run's held-out reports vs their own reports."""
    import pandas as pd

    from cxr_irgen.text.chexpert_f1 import chexpert_f1_reports

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


def compare(claim: str, source: str, metric: str, values: dict[str, list], better: str, other: str, higher_is_better: bool, note: str = "") -> dict:
    """One row: the paper's ``better`` arm vs ``other`` on ``metric``, paired by seed over the seeds both arms finished.

    ``values``: per arm, one entry per seed: the number, NaN where the metric is undefined, None where the run did not finish.
    """
    row = {"claim": claim, "source": source, "metric": metric, "better": better, "other": other, "higher_is_better": higher_is_better,
           "per_seed": {arm: values[arm] for arm in (better, other)}, "note": note}
    pairs = [(a, b) for a, b in zip(values[better], values[other]) if a is not None and b is not None]
    row["n_seeds"] = len(pairs)
    if not pairs:
        return {**row, "effect": None, "ci95": None, "verdict": "not run (the runs did not finish)"}
    if any(np.isnan(v) for pair in pairs for v in pair):
        return {**row, "effect": None, "ci95": None, "verdict": "not measured: the metric is undefined in some seed (see per_seed)"}
    sign = 1.0 if higher_is_better else -1.0
    effect, ci = seed_interval([sign * (a - b) for a, b in pairs])
    return {**row, "effect": effect, "ci95": ci, "verdict": verdict(ci)}


def claims_table(rows: list[dict]) -> str:
    header = ["claim (paper)", "metric", "paper's better arm: mean over seeds", "other arm", "effect (better − other, paper's direction > 0)",
              "95% CI over seeds", "seeds", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r["ci95"] else "–"
        finished = lambda name: [v for v in r["per_seed"][name] if v is not None]  # noqa: E731
        arm = lambda name: f"{name}: {np.mean(finished(name)):.3f}" if finished(name) else f"{name}: –"  # noqa: E731
        effect = "–" if r["effect"] is None else f"{r['effect']:+.3f}"
        lines.append(f"| {r['claim']} ({r['source']}) | {r['metric']} | {arm(r['better'])} | {arm(r['other'])} | {effect} | {ci} | {r['n_seeds']} | "
                     f"{r['verdict']}{' — ' + r['note'] if r['note'] else ''} |")
    return "\n".join(lines) + "\n"


def _finished(run: Path) -> bool:
    return (run / DONE).is_file()


def collect(out: Path, seeds: int) -> dict[str, dict[str, list]]:
    """Per metric, per arm, one value per seed from the finished runs under ``out`` (None: not finished; NaN: undefined)."""
    values: dict[str, dict[str, list]] = {k: {} for k in ("fid", "auroc", "bleu", "loss_f1", "input_f1")}
    nan = float("nan")
    for seed in range(seeds):
        at = out / f"seed-{seed}"
        for mode in ("concat", "text"):
            scored = metrics_of(at / f"evaluate-{mode}") if _finished(at / f"evaluate-{mode}") else None
            values["fid"].setdefault(mode, []).append(scored and scored["fid"]["value"])
            auroc = scored and scored["auroc"]["generated"]["mean"]
            values["auroc"].setdefault(mode, []).append(nan if scored and auroc is None else auroc)
        for pooling in POOLINGS:
            run = at / f"autoencoder-{pooling}"
            values["bleu"].setdefault(pooling, []).append(metrics_of(run)["reconstruction_bleu4"] if _finished(run) else None)
        for loss in LOSSES:
            run = at / f"prior-image-{loss}"
            values["loss_f1"].setdefault(loss, []).append(report_f1(run) if _finished(run) else None)
        for prior_input in INPUTS:
            run = at / f"prior-{prior_input}-mse+cos"
            values["input_f1"].setdefault(prior_input, []).append(report_f1(run) if _finished(run) else None)
    return values



def phantom_test_label_sets(root: Path, limit: int):
    """The distinct label vectors of the phantom test split, most frequent first, (≤ limit, 14) CheXpert columns."""
    import pandas as pd

    from cxr_irgen.data.labels import CHEXPERT_LABELS, label_key

    chexpert = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    test = chexpert[chexpert.study_id.isin(split.loc[split.split == "test", "study_id"])]
    keys = test[list(CHEXPERT_LABELS)].apply(lambda row: label_key(row.to_numpy(dtype="float32")), axis=1)
    first = test.assign(key=keys).groupby("key").head(1).set_index("key")
    return first.loc[keys.value_counts().index[:limit], list(CHEXPERT_LABELS)].reset_index(drop=True)

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="run only this seed's arms (seeds in parallel processes), no table")
    parser.add_argument("--part", choices=("all", "vision", "autoencoders", "priors"), default="all",
                        help="only the vision arms, the stage-1 arms or the prior arms (after the mean-pooling stage 1), no table")
    parser.add_argument("--table-only", action="store_true", help="run nothing: the table from the runs finished under --out (others: not run)")
    parser.add_argument("--out", type=Path, default=Path("outputs/paper_claims"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 steps per run: checks the pipeline, not the claims")
    args = parser.parse_args(argv)
    import torch

    from cxr_irgen.data.phantoms import make_phantoms

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
    phantom_test_label_sets(data, scale["label_sets"]).to_csv(labels_csv, index=False)
    language = [*on_data, *tiny, "language/model=bart-tiny", "language/prior=vit-tiny", f"data.image_size={scale['size']}",
                f"evaluation.max_reports={scale['max_reports']}", "evaluation.max_length=60"]
    for seed in [] if args.table_only else range(args.seeds) if args.seed is None else [args.seed]:
        at = out / f"seed-{seed}"
        if args.part in ("all", "vision"):
            for mode in ("concat", "text"):
                vision = run_step(at / f"vision-{mode}", "train-vision", [
                    *on_data, "vision/model=unet-tiny", *tiny, f"trainer.max_steps={scale['vision_steps']}", f"trainer.batch_size={scale['batch']}",
                    "trainer.lr=2e-3", f"vision.model.conditioning.mode={mode}", "sample_every=0", f"seed={seed}"])
                generated = run_step(at / f"generate-{mode}", "generate", [
                    f"vision.checkpoint={vision}", f"labels_file={labels_csv}", f"n={scale['generate_n']}", "mode=images", "vision.scheduler=ddim",
                    f"vision.steps={scale['sampler_steps']}", f"seed={seed}"])
                run_step(at / f"evaluate-{mode}", "evaluate", [
                    *on_data, f"generated={generated}", "eval.metrics=[fid,auroc]", "eval.fid.features=classifier", f"eval.fid.classifier={classifier}",
                    f"eval.auroc.classifier={classifier}", "eval.auroc.real=false", f"eval.auroc.n={scale['auroc_n']}", f"eval.real.n={scale['real_n']}",
                    "eval.real.views=[PA,AP]"])
        if args.part in ("all", "autoencoders", "priors"):
            autoencoders = {}
            for pooling in POOLINGS if args.part != "priors" else ("mean",):
                autoencoders[pooling] = run_step(at / f"autoencoder-{pooling}", "train-language", [
                    *language, "stage=autoencoder", f"model.pooling={pooling}", "model.word_dropout=0.3", f"trainer.max_steps={scale['autoencoder_steps']}",
                    f"seed={seed}"])
            priors = [(loss, "image") for loss in LOSSES] + [("mse+cos", i) for i in INPUTS if i != "image"]
            for loss, prior_input in priors if args.part != "autoencoders" else []:
                run_step(at / f"prior-{prior_input}-{loss}", "train-language", [
                    *language, "stage=prior", f"autoencoder={autoencoders['mean']}", f"prior.loss={loss}", f"prior.input={prior_input}",
                    f"trainer.max_steps={scale['prior_steps']}", "trainer.lr=1e-3", f"seed={seed}"])
    values = collect(out, args.seeds)
    if args.seed is not None or args.part != "all":
        return {"seed": args.seed, "part": args.part, "values": values}
    random_clip = "the CLIP tower has random weights here (no CLIP weights offline): a random projection, not CLIP"
    rows = [
        compare("reference image improves image quality", "Tab. 1", "FID (phantom-classifier features)", values["fid"], "concat", "text", False),
        compare("reference image improves class fidelity", "Tab. 2", "mean AUROC on generated images", values["auroc"], "concat", "text", True),
        *[compare("mean pooling reconstructs best", "Fig. 5", "reconstruction BLEU-4", values["bleu"], "mean", other, True) for other in ("bos", "eos")],
        *[compare("mse+cos prior loss is best", "Tab. 5", "report CheXpert F1 (micro 14)", values["loss_f1"], "mse+cos", other, True) for other in ("mse", "cos")],
        *[compare("CLIP embedding is the best prior input", "Tab. 5", "report CheXpert F1 (micro 14)", values["input_f1"], "clip", other, True, random_clip)
          for other in ("latent", "image")],
    ]
    table = claims_table(rows)
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
