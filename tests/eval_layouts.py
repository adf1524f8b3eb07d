"""Fixtures of the evaluate input tests: phantoms as real data, a tiny trained classifier, and 32 phantom images laid out
as other generators write them (a folder with a free-text prompts CSV, images named by row, CheXGenBench's layout, a
reports CSV)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_irgen.data.labels import CHEXPERT_LABELS, labels_from_row

N_GENERATED = 32
CLASSIFIER = ["classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16", "resolution=32",
              "trainer.max_steps=2", "trainer.batch_size=4", "protocol_n=10"]


def evaluate_overrides(phantoms, classifier) -> list[str]:
    """Small sizes and the tiny classifier (FID features and AUROC / agreement calls): no random weights."""
    return [f"data.root={phantoms}", "eval.real.split=train", "eval.real.views=[PA,AP]", "eval.real.n=1000", "eval.fid.features=classifier",
            f"eval.fid.classifier={classifier}", f"eval.auroc.classifier={classifier}", "eval.auroc.n=8", "eval.chexpert_f1.n_bootstrap=10",
            "eval.agreement.n_bootstrap=20", "eval.text.meteor=false", "eval.kid.subsets=10", "eval.per_pathology.min_n=3"]


def free_text(labels: np.ndarray) -> str:
    """A free-text prompt naming the positive findings of a (14,) label vector (not this library's template)."""
    names = [n.lower() for n, v in zip(CHEXPERT_LABELS, labels) if v == 1.0 and n not in ("No Finding", "Pleural Other")]
    return f"Frontal chest radiograph showing {', '.join(names)}." if names else "Frontal chest radiograph, no acute cardiopulmonary abnormality."


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms"), n=120, seed=0, size=32)


@pytest.fixture(scope="module")
def classifier(phantoms, tmp_path_factory):
    from cxr_irgen.cli import run_command

    out = tmp_path_factory.mktemp("classifier")
    run_command("train-classifier", ["data=phantom", f"data.root={phantoms}", *CLASSIFIER, f"hydra.run.dir={out}"])
    return out


@pytest.fixture(scope="module")
def chosen(phantoms) -> pd.DataFrame:
    """32 frontal phantoms of the validate/test splits with their labels, a free-text prompt and their findings as report."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.sections import load_report_sections

    table = load_index(phantoms)
    rows = table[table["view"].isin(["PA", "AP"]) & (table["split"] != "train")].head(N_GENERATED)
    if len(rows) < N_GENERATED:
        rows = table[table["view"].isin(["PA", "AP"])].tail(N_GENERATED)
    rows = rows.reset_index(drop=True)
    findings = load_report_sections(rows).set_index("study_id")["findings"]
    labels = [labels_from_row(r) for r in rows.to_dict("records")]
    return pd.DataFrame({"source": rows["image_path"], "labels": labels, "prompt": [free_text(v) for v in labels],
                         "report": [findings.get(s) or "No acute cardiopulmonary process." for s in rows["study_id"]]})


def write_layouts(chosen: pd.DataFrame, root) -> None:
    """The four layouts of docs/evaluate-any-generator.md under ``root``."""
    mine, row_named, bench = root / "my_images", root / "roentgen_out", root / "assets" / "synthetic_images"
    for folder in (mine, row_named, bench, root / "assets" / "CSV"):
        folder.mkdir(parents=True)
    names = [f"img_{i:03d}.png" for i in range(len(chosen))]
    for i, (source, name) in enumerate(zip(chosen["source"], names)):
        from PIL import Image

        image = Image.open(source).convert("L")
        image.save(mine / name)
        image.save(row_named / f"{i}.png")
        image.save(bench / f"synth_{i}.png")
    pd.DataFrame({"image": names, "prompt": chosen["prompt"], "report": chosen["report"], "reference": chosen["report"].iloc[::-1].tolist()}).to_csv(mine / "prompts.csv", index=False)
    pd.DataFrame({"prompt": chosen["prompt"]}).to_csv(row_named / "prompts.csv", index=False)
    pd.DataFrame({"prompt": chosen["prompt"], "img_savename": [f"synth_{i}.png" for i in range(len(chosen))]}).to_csv(
        root / "assets" / "CSV" / "prompt_INFO.csv", index=False)
    pd.DataFrame({"generated": chosen["report"], "ground_truth": chosen["report"].iloc[::-1].tolist()}).to_csv(root / "reports.csv", index=False)
