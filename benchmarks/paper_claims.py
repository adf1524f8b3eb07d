"""The paper's ablation claims, tested on phantoms (where the truth is known) with several seeds per arm, each arm
against the control that bounds it; and the sampling-steps question the paper does not answer.

    .venv/bin/python benchmarks/paper_claims.py [--seeds 5] [--seed K] [--part P] [--out DIR] [--threads 2] [--smoke]

Every arm is the demo's recipe at the demo's budget (``configs/demo.yaml``: tiny U-Net at 64 px, 500 steps at batch 32
with EMA 0.99; 2-layer BART stage 1, 1,500 steps; tiny ViT prior, 1,500 steps, reading the image alone as in the
paper (the demo's label tokens are beyond it); a phantom classifier), once per seed,
through the commands a user runs (``train-vision``, ``generate``, ``evaluate``, ``train-language``, ``train-classifier``):

- reference image vs text only (Tab. 1-2): ``vision.model.conditioning.mode=concat`` (text + reference-image token)
  vs ``text``; 96 images for the 12 most frequent test label vectors (DDIM, 20 steps); FID on the phantom classifier's
  features against 200 real test phantoms (control: 96 real *training* phantoms, the floor no generator goes below)
  and the AUROC protocol with that classifier (control: the same images with their label vectors shuffled, chance);
- mean vs BOS vs EOS pooling (Fig. 5): ``model.pooling``; BLEU-4 of held-out reports reconstructed through the
  one-token bottleneck (control: the most frequent training report written for every held-out report);
- mse+cos vs mse vs cos (Tab. 5): ``prior.loss``, prior input 16 px pixels, on the seed's mean-pooling stage 1;
  CheXpert F1 (rules labeler, micro over 14, positive only) of the reports written for held-out images vs their own
  reports (control: the better of the same reports shuffled across the images and the most frequent training report);
- the best prior input (Tab. 5: CLIP's image embedding): no CLIP weights exist offline, so the stand-in for a
  pretrained image embedding is the frozen phantom classifier's features (``prior.input=classifier``), against the
  codec latent and 16 px pixels, loss mse+cos, same F1 and control;
- samplers (not in the paper): PNDM (the paper's, 50 steps) vs DDIM vs DPM-Solver++ at 10/20/50 steps on each
  seed's reference-image model, FID and AUROC as above; images/s timed separately (``--part speed``: one process,
  the pipeline already loaded, the median of rounds), so the timing does not depend on what else ran.

A claim row: the per-seed difference of the paper's better arm minus the other (signed so that positive means the
paper's direction), its mean and a 95% t-interval over seeds (paired by seed). Each arm is also compared with its
control the same way; verdict: "no signal" when neither arm is distinguishable from its control (both at chance, or
both at the real-data floor), else "confirmed" (interval above 0), "refuted" (below 0) or "no significant
difference". Finished runs are kept and skipped when the command is run again with the same ``--out``; ``--seed K``
and ``--part`` run only part of the arms, so parts can run in parallel processes (a step another process is running
is waited for) before one plain call writes the tables; ``--table-only`` writes them from the runs finished so far.
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

SCALES = {  # steps and sizes: full (the demo's budget; the README run) and --smoke (the test)
    "full": {"phantoms": 1200, "size": 64, "vision_model": "unet-tiny-64", "vision_steps": 500, "batch": 32, "generate_n": 8, "label_sets": 12,
             "claim_sampler": ["ddim", 20], "sampler_steps": [10, 20, 50], "speed_n": 32, "speed_rounds": 3,
             "autoencoder_steps": 1500, "prior_steps": 1500, "classifier_steps": 200, "real_n": 200, "auroc_n": 100, "max_reports": 100},
    "smoke": {"phantoms": 120, "size": 32, "vision_model": "unet-tiny", "vision_steps": 2, "batch": 8, "generate_n": 2, "label_sets": 3,
              "claim_sampler": ["ddim", 2], "sampler_steps": [2, 3], "speed_n": 2, "speed_rounds": 1,
              "autoencoder_steps": 2, "prior_steps": 2, "classifier_steps": 2, "real_n": 8, "auroc_n": 8, "max_reports": 8},
}
MODES = ("concat", "text")
POOLINGS = ("mean", "bos", "eos")
LOSSES = ("mse+cos", "mse", "cos")
INPUTS = ("classifier", "latent", "image")
SAMPLERS = ("pndm", "ddim", "dpm++")
PAPER_SAMPLER = ("pndm", 50)
AUROC_PATHOLOGIES = "[Atelectasis,Cardiomegaly,Lung Opacity,Effusion]"
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


def write_pairs(folder: Path, images: list[str], labels: list[str]) -> Path:
    """A folder ``evaluate`` reads: ``pairs.jsonl`` naming each image (absolute path) with its label string."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"image": str(Path(image).resolve()), "labels": label}) for image, label in zip(images, labels)]
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def shuffled_labels(generated: Path, out: Path, seed: int) -> Path:
    """The images of a generate run with their label vectors permuted across images (the chance control of AUROC)."""
    records = [json.loads(line) for line in (generated / "pairs.jsonl").read_text().splitlines() if line.strip()]
    labels = [r["labels"] for r in records]
    order = np.random.default_rng(seed).permutation(len(labels))
    return write_pairs(out, [str(generated / r["image"]) if not Path(r["image"]).is_absolute() else r["image"] for r in records],
                       [labels[i] for i in order])


def phantom_data(data: Path):
    """The ``data`` config of the phantom tree ``data`` and its index table."""
    from omegaconf import OmegaConf

    from cxr_irgen.data.adapters import load_table

    data_cfg = OmegaConf.create({"name": "phantom", "root": str(data), "cache_dir": None})
    return data_cfg, load_table(data_cfg)


def real_training_images(data: Path, n: int, seed: int, out: Path) -> Path:
    """``n`` random PA/AP training phantoms with their own labels (the real-data floor of FID, the ceiling of AUROC)."""
    from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels

    table = phantom_data(data)[1]
    train = table[(table["split"] == "train") & table["view"].isin(["PA", "AP"])]
    pick = train.iloc[np.sort(np.random.default_rng(seed).choice(len(train), min(n, len(train)), replace=False))]
    return write_pairs(out, pick["image_path"].tolist(), [format_labels(v) for v in pick[list(CHEXPERT_LABELS)].to_numpy(np.float32)])


def training_reports(data: Path) -> list[str]:
    """The training studies' findings, the texts stage 1 learns."""
    from cxr_irgen.data.adapters import load_sections
    from cxr_irgen.data.selections import language_stage1

    data_cfg, table = phantom_data(data)
    return language_stage1(table, load_sections(table, data_cfg), "findings")["text"].tolist()


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def report_f1(generated: list[str], references: list[str]) -> float:
    """CheXpert F1 (rules labeler, micro 14, positive only) of ``generated`` vs ``references``."""
    from cxr_irgen.text.chexpert_f1 import chexpert_f1_reports

    return chexpert_f1_reports(generated, references, n_bootstrap=0)["positive_only"]["micro_14"]["value"]


def prior_f1(run: Path, most_frequent: str, seed: int) -> tuple[float, float]:
    """F1 of a prior run's held-out reports vs their own reports, and its control: the better of the same reports
    with the references shuffled (seeded) and the most frequent training report written for every image."""
    import pandas as pd

    frame = pd.read_csv(run / "reports.csv", keep_default_na=False)
    generated, references = frame["generated"].tolist(), frame["reference"].tolist()
    shuffled = [references[i] for i in np.random.default_rng(seed).permutation(len(references))]
    control = max(report_f1(generated, shuffled), report_f1([most_frequent] * len(references), references))
    return report_f1(generated, references), control


def interval(differences: list[float]) -> tuple[float, list[float] | None]:
    """Mean of per-seed values and its 95% t-interval over seeds (None with one seed)."""
    from scipy.stats import t

    d = np.asarray(differences, np.float64)
    if len(d) < 2:
        return float(d.mean()), None
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()), [float(d.mean() - half), float(d.mean() + half)]



def _paired(a: list, b: list) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


def separated(differences: list[float]) -> bool:
    """Whether per-seed differences (positive: distinguishable in the expected direction) are above 0: the interval's
    lower end with two seeds or more, the value with one."""
    if not differences:
        return False
    mean, ci = interval(differences)
    return (ci[0] if ci else mean) > 0


def verdict(ci: list[float] | None, signal: bool) -> str:
    if not signal:
        return "no signal (both arms at the control)"
    if ci is None:
        return "undecided (one seed: no interval)"
    if ci[0] > 0:
        return "confirmed at this scale"
    if ci[1] < 0:
        return "refuted at this scale"
    return "no significant difference"


def compare(claim: str, source: str, metric: str, values: dict[str, list], better: str, other: str, higher_is_better: bool,
            controls: dict[str, list] | None = None, control: str = "chance", note: str = "") -> dict:
    """One row: the paper's ``better`` arm vs ``other`` on ``metric``, paired by seed over the seeds both arms finished.

    ``values``: per arm, one entry per seed: the number, NaN where the metric is undefined, None where the run did not
    finish. ``controls``: per arm, its control per seed; ``control="chance"``: an arm shows a signal when it beats its
    control (most frequent output, shuffled pairing); ``"floor"``: when it is distinguishable from real data, which it
    cannot beat. Without controls every arm counts as showing a signal.
    """
    sign = 1.0 if higher_is_better else -1.0
    row = {"claim": claim, "source": source, "metric": metric, "better": better, "other": other, "higher_is_better": higher_is_better,
           "per_seed": {arm: values[arm] for arm in (better, other)}, "control": control, "note": note}
    pairs = _paired(values[better], values[other])
    row["n_seeds"] = len(pairs)
    if not pairs:
        return {**row, "effect": None, "ci95": None, "verdict": "not run (the runs did not finish)"}
    if any(np.isnan(v) for pair in pairs for v in pair):
        return {**row, "effect": None, "ci95": None, "verdict": "not measured: the metric is undefined in some seed (see per_seed)"}
    signal = True
    if controls is not None:
        row["controls"] = {arm: controls[arm] for arm in (better, other)}
        direction = sign if control == "chance" else -sign
        row["above_control"] = {arm: separated([direction * (a - c) for a, c in _paired(values[arm], controls[arm])]) for arm in (better, other)}
        signal = any(row["above_control"].values())
    effect, ci = interval([sign * (a - b) for a, b in pairs])
    return {**row, "effect": effect, "ci95": ci, "verdict": verdict(ci, signal)}


def _mean(values: list) -> float | None:
    finished = [v for v in values if v is not None]
    return float(np.mean(finished)) if finished else None


def claims_table(rows: list[dict]) -> str:
    header = ["claim (paper)", "metric", "paper's better arm: mean over seeds", "other arm", "control: mean (better / other)",
              "effect (better − other, paper's direction > 0)", "95% CI over seeds", "seeds", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ci = f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r["ci95"] else "–"
        arm = lambda name: f"{name}: {_mean(r['per_seed'][name]):.3f}" if _mean(r["per_seed"][name]) is not None else f"{name}: –"  # noqa: E731
        if "controls" in r:
            kind = "chance" if r["control"] == "chance" else "real-data floor"
            means = [_mean(r["controls"][name]) for name in (r["better"], r["other"])]
            control = f"{kind}: " + " / ".join("–" if m is None else f"{m:.3f}" for m in means)
        else:
            control = "–"
        effect = "–" if r["effect"] is None else f"{r['effect']:+.3f}"
        lines.append(f"| {r['claim']} ({r['source']}) | {r['metric']} | {arm(r['better'])} | {arm(r['other'])} | {control} | {effect} | {ci} | "
                     f"{r['n_seeds']} | {r['verdict']}{' — ' + r['note'] if r['note'] else ''} |")
    return "\n".join(lines) + "\n"


def _finished(run: Path) -> bool:
    return (run / DONE).is_file()


def sampler_runs(scale: dict) -> list[tuple[str, int]]:
    return [(sampler, steps) for sampler in SAMPLERS for steps in scale["sampler_steps"]]


def sampler_name(sampler: str, steps: int, scale: dict) -> str:
    """The run name of the reference-image model's images for one sampler: the claim's own run for the claim's sampler."""
    return "concat" if [sampler, steps] == list(scale["claim_sampler"]) else f"concat-{sampler}-{steps}"


def collect(out: Path, seeds: int, scale: dict) -> dict[str, dict[str, list]]:
    """Per metric, per arm (and control), one value per seed from the finished runs under ``out`` (None: not finished;
    NaN: undefined)."""
    import pandas as pd

    from cxr_irgen.language.train import bleu4

    values: dict[str, dict[str, list]] = {k: {} for k in ("fid", "auroc", "bleu", "loss_f1", "input_f1", "f1_control", "sampler_fid", "sampler_auroc")}
    nan = float("nan")
    data = out / "phantoms"
    most_frequent = None
    if _finished(data):
        from collections import Counter

        most_frequent = Counter(training_reports(data)).most_common(1)[0][0]

    def scored(run: Path, metric: str):
        if not _finished(run):
            return None
        m = metrics_of(run)
        if metric == "fid":
            return m["fid"]["value"]
        value = m["auroc"]["generated"]["mean"]
        return nan if value is None else value

    for seed in range(seeds):
        at = out / f"seed-{seed}"
        for name in (*MODES, "real-train", *(f"shuffled-{mode}" for mode in MODES)):
            for metric in ("fid", "auroc"):
                if metric == "fid" and name.startswith("shuffled"):
                    continue
                values[metric].setdefault(name, []).append(scored(at / f"evaluate-{name}", metric))
        for sampler, steps in sampler_runs(scale):
            run = at / f"evaluate-{sampler_name(sampler, steps, scale)}"
            values["sampler_fid"].setdefault(f"{sampler}-{steps}", []).append(scored(run, "fid"))
            values["sampler_auroc"].setdefault(f"{sampler}-{steps}", []).append(scored(run, "auroc"))
        for pooling in POOLINGS:
            run = at / f"autoencoder-{pooling}"
            values["bleu"].setdefault(pooling, []).append(metrics_of(run)["reconstruction_bleu4"] if _finished(run) else None)
            if pooling == "mean":
                control = None
                if _finished(run) and most_frequent is not None:
                    references = pd.read_csv(run / "reconstructions.csv", keep_default_na=False)["reference"].tolist()
                    control = bleu4([most_frequent] * len(references), references)
                values["bleu"].setdefault("most frequent", []).append(control)
        for loss, prior_input in [(loss, "image") for loss in LOSSES] + [("mse+cos", i) for i in INPUTS if i != "image"]:
            run = at / f"prior-{prior_input}-{loss}"
            f1, control = prior_f1(run, most_frequent, seed) if _finished(run) and most_frequent is not None else (None, None)
            if prior_input == "image":
                values["loss_f1"].setdefault(loss, []).append(f1)
            if loss == "mse+cos":
                values["input_f1"].setdefault(prior_input, []).append(f1)
            values["f1_control"].setdefault(f"{prior_input}-{loss}", []).append(control)
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



def speed(vision: Path, labels_csv: Path, scale: dict, out: Path) -> dict:
    """Images/s of each sampler × steps: the reference-image pipeline loaded once, ``speed_n`` images per round (one
    batch), the median over ``speed_rounds`` rounds after one warm-up round. Written to ``out`` (``speed.json``)."""
    import pandas as pd
    import torch

    from cxr_irgen import PairPipeline
    from cxr_irgen.data.labels import CHEXPERT_LABELS

    pipe = PairPipeline.from_run_dirs(vision=vision, device="cpu")
    vectors = pd.read_csv(labels_csv)[list(CHEXPERT_LABELS)].to_numpy(np.float32)
    labels = vectors[np.arange(scale["speed_n"]) % len(vectors)]
    result = {"n_images": len(labels), "rounds": scale["speed_rounds"], "threads": torch.get_num_threads(), "machine": common.machine(), "images_per_s": {}}
    for sampler, steps in sampler_runs(scale):
        pipe(labels, seeds=0, sampler=sampler, steps=steps, reports=False)
        walls = []
        for _ in range(scale["speed_rounds"]):
            started = time.perf_counter()
            pipe(labels, seeds=0, sampler=sampler, steps=steps, reports=False)
            walls.append(time.perf_counter() - started)
        result["images_per_s"][f"{sampler}-{steps}"] = len(labels) / float(np.median(walls))
    result["machine_after"] = common.machine()
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(result, indent=1))
    return result


def sampler_rows(values: dict, scale: dict, speeds: dict | None) -> list[dict]:
    """Per sampler × steps: FID and AUROC, their means and 95% intervals over seeds, the paired difference from the
    paper's sampler (PNDM, 50 steps), and images/s."""
    reference = f"{PAPER_SAMPLER[0]}-{PAPER_SAMPLER[1]}"
    rows = []
    for sampler, steps in sampler_runs(scale):
        name, row = f"{sampler}-{steps}", {"sampler": sampler, "steps": steps}
        for metric in ("fid", "auroc"):
            per_seed = values[f"sampler_{metric}"][name]
            finished = [v for v in per_seed if v is not None]
            row[metric] = {"per_seed": per_seed, "n_seeds": len(finished)}
            if finished:
                row[metric]["mean"], row[metric]["ci95"] = interval(finished)
            base = values[f"sampler_{metric}"].get(reference)
            pairs = _paired(per_seed, base) if base else []
            if pairs and name != reference:
                row[metric]["vs_paper"], row[metric]["vs_paper_ci95"] = interval([a - b for a, b in pairs])
        row["images_per_s"] = speeds["images_per_s"].get(name) if speeds else None
        rows.append(row)
    return rows


def _with_interval(value: float | None, ci: list[float] | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "–"
    number = f"{{:{'+' if signed else ''}.{digits}f}}"
    return number.format(value) + (f" [{number.format(ci[0])}, {number.format(ci[1])}]" if ci else "")


def samplers_table(rows: list[dict]) -> str:
    header = ["sampler", "steps", "FID (95% CI)", "FID − PNDM 50 (paired CI)", "mean AUROC (95% CI)", "AUROC − PNDM 50 (paired CI)", "images/s", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["sampler"], str(r["steps"])]
        for metric, digits in (("fid", 2), ("auroc", 3)):
            block = r[metric]
            cells += [_with_interval(block.get("mean"), block.get("ci95"), digits), _with_interval(block.get("vs_paper"), block.get("vs_paper_ci95"), digits, True)]
        cells += ["–" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}", str(r["fid"]["n_seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_seed(seed: int, part: str, out: Path, data: Path, classifier: Path, labels_csv: Path, scale: dict) -> None:
    """Every step of one seed's arms in ``part`` (``all``, ``vision``, ``samplers``, ``autoencoders``, ``priors``)."""
    at = out / f"seed-{seed}"
    on_data = [f"data.root={data}"]
    tiny = ["trainer=cpu-tiny", "trainer.checkpoint_every=100000"]
    evaluate = [*on_data, "eval.metrics=[fid,auroc]", "eval.fid.features=classifier", f"eval.fid.classifier={classifier}",
                f"eval.auroc.classifier={classifier}", "eval.auroc.real=false", f"eval.auroc.n={scale['auroc_n']}",
                f"eval.auroc.pathologies={AUROC_PATHOLOGIES}", f"eval.real.n={scale['real_n']}", "eval.real.views=[PA,AP]"]
    language = [*on_data, *tiny, "trainer.batch_size=16", "language/model=bart-tiny", "language/prior=vit-tiny", f"data.image_size={scale['size']}",
                f"evaluation.max_reports={scale['max_reports']}", "evaluation.max_length=60"]

    def images(name: str, vision: Path, sampler: str, steps: int) -> None:
        generated = run_step(at / f"generate-{name}", "generate", [
            f"vision.checkpoint={vision}", f"labels_file={labels_csv}", f"n={scale['generate_n']}", "mode=images", f"vision.scheduler={sampler}",
            f"vision.steps={steps}", f"seed={seed}"])
        run_step(at / f"evaluate-{name}", "evaluate", [*evaluate, f"generated={generated}"])

    if part in ("all", "vision"):
        for mode in MODES:
            vision = run_step(at / f"vision-{mode}", "train-vision", [
                *on_data, f"vision/model={scale['vision_model']}", *tiny, f"trainer.max_steps={scale['vision_steps']}",
                f"trainer.batch_size={scale['batch']}", "trainer.lr=2e-3", "trainer.ema_decay=0.99", f"vision.model.conditioning.mode={mode}",
                "sample_every=0", f"seed={seed}"])
            images(mode, vision, *scale["claim_sampler"])
            shuffled = shuffled_labels(at / f"generate-{mode}", at / f"shuffled-{mode}", seed)
            run_step(at / f"evaluate-shuffled-{mode}", "evaluate", [*evaluate, f"generated={shuffled}", "eval.metrics=[auroc]"])
        real = real_training_images(data, scale["label_sets"] * scale["generate_n"], seed, at / "real-train")
        run_step(at / "evaluate-real-train", "evaluate", [*evaluate, f"generated={real}"])
    if part in ("all", "samplers"):
        vision = at / "vision-concat"
        if not _finished(vision):
            raise SystemExit(f"--part samplers needs {at / 'vision-concat'} (run --part vision first)")
        for sampler, steps in sampler_runs(scale):
            images(sampler_name(sampler, steps, scale), vision, sampler, steps)
    if part in ("all", "autoencoders", "priors"):
        autoencoders = {}
        for pooling in POOLINGS if part != "priors" else ("mean",):
            autoencoders[pooling] = run_step(at / f"autoencoder-{pooling}", "train-language", [
                *language, "stage=autoencoder", f"model.pooling={pooling}", "model.word_dropout=0.3",
                f"trainer.max_steps={scale['autoencoder_steps']}", f"seed={seed}"])
        priors = [(loss, "image") for loss in LOSSES] + [("mse+cos", i) for i in INPUTS if i != "image"]
        for loss, prior_input in priors if part != "autoencoders" else []:
            run_step(at / f"prior-{prior_input}-{loss}", "train-language", [
                *language, "stage=prior", f"autoencoder={autoencoders['mean']}", f"prior.loss={loss}", f"prior.input={prior_input}",
                f"prior.classifier.source={classifier}", f"trainer.max_steps={scale['prior_steps']}", "trainer.lr=1e-3", f"seed={seed}"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="run only this seed's arms (seeds in parallel processes), no table")
    parser.add_argument("--part", choices=("all", "vision", "samplers", "autoencoders", "priors", "speed"), default="all",
                        help="only these arms (samplers: after vision; priors: after the mean-pooling stage 1; speed: images/s on seed 0's model), no table")
    parser.add_argument("--table-only", action="store_true", help="run nothing: the tables from the runs finished under --out (others: not run)")
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
    if not _finished(data):
        make_phantoms(data, n=scale["phantoms"], seed=0, size=scale["size"])
        (data / DONE).write_text("built\n")
    classifier = run_step(out / "classifier", "train-classifier", [
        f"data.root={data}", "trainer=cpu-tiny", "trainer.checkpoint_every=100000", "trainer.batch_size=16", f"trainer.max_steps={scale['classifier_steps']}",
        f"resolution={scale['size']}", "classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16",
        f"protocol_n={scale['auroc_n']}"])
    labels_csv = out / "test_labels.csv"
    phantom_test_label_sets(data, scale["label_sets"]).to_csv(labels_csv, index=False)
    if not args.table_only and args.part != "speed":
        for seed in range(args.seeds) if args.seed is None else [args.seed]:
            run_seed(seed, args.part, out, data, classifier, labels_csv, scale)
    speed_file = out / "speed" / "speed.json"
    if args.part == "speed" or (args.part == "all" and args.seed is None and not args.table_only and not speed_file.is_file()):
        vision = out / "seed-0" / "vision-concat"
        if not _finished(vision):
            raise SystemExit(f"--part speed needs {vision} (run --part vision --seed 0 first)")
        speed(vision, labels_csv, scale, out / "speed")
    values = collect(out, args.seeds, scale)
    if args.seed is not None or args.part != "all":
        return {"seed": args.seed, "part": args.part, "values": values}
    controls = lambda metric, arms: {arm: values[metric][f"shuffled-{arm}"] for arm in arms}  # noqa: E731
    real_floor = {mode: values["fid"]["real-train"] for mode in MODES}
    bleu_control = {pooling: values["bleu"]["most frequent"] for pooling in POOLINGS}
    loss_control = {loss: values["f1_control"][f"image-{loss}"] for loss in LOSSES}
    input_control = {i: values["f1_control"][f"{i}-mse+cos"] for i in INPUTS}
    stand_in = "CLIP's embedding has no offline weights: the frozen phantom classifier's features stand in for a pretrained image embedding"
    rows = [
        compare("reference image improves image quality", "Tab. 1", "FID (phantom-classifier features)", values["fid"], "concat", "text", False,
                real_floor, "floor"),
        compare("reference image improves class fidelity", "Tab. 2", "mean AUROC on generated images", values["auroc"], "concat", "text", True,
                controls("auroc", MODES)),
        *[compare("mean pooling reconstructs best", "Fig. 5", "reconstruction BLEU-4", values["bleu"], "mean", other, True, bleu_control)
          for other in ("bos", "eos")],
        *[compare("mse+cos prior loss is best", "Tab. 5", "report CheXpert F1 (micro 14)", values["loss_f1"], "mse+cos", other, True, loss_control)
          for other in ("mse", "cos")],
        *[compare("a pretrained image embedding is the best prior input", "Tab. 5", "report CheXpert F1 (micro 14)", values["input_f1"], "classifier",
                  other, True, input_control, note=stand_in) for other in ("latent", "image")],
    ]
    speeds = json.loads(speed_file.read_text()) if speed_file.is_file() else None
    samplers = sampler_rows(values, scale, speeds)
    table = claims_table(rows)
    sampler_table = samplers_table(samplers)
    wall = time.perf_counter() - started
    summary = {"benchmark": "paper_claims", "scale": "smoke" if args.smoke else "full", "seeds": args.seeds, "sizes": scale, "claims": rows,
               "samplers": samplers, "speed": speeds, "values": values, "wall_s": round(wall, 1), "threads": args.threads, "out": str(out),
               "machine": common.machine(), "command": common.command()}
    (out / "claims.md").write_text(table + "\n" + sampler_table)
    (out / "claims.json").write_text(json.dumps(summary, indent=1))
    print(table)
    print(sampler_table)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
