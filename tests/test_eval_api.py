"""The config-free evaluation functions (issue 23): ``evaluate_images`` / ``evaluate_reports`` / ``evaluate_pairs``
called with paths, a folder, arrays, tensors, label strings, lists and a DataFrame give the numbers that
``cxr-irgen evaluate`` writes to metrics.json for the same 32 free-text phantoms (docs/evaluate-any-generator.md's
first layout)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from eval_layouts import N_GENERATED, chosen, classifier, evaluate_overrides, phantoms, write_layouts  # noqa: F401  (fixtures)
from eval_threads import one_thread  # noqa: F401  (fixture)

from cxr_irgen.cli import main
from cxr_irgen.data.labels import CHEXPERT_LABELS, format_labels, labels_from_row
from cxr_irgen.eval import evaluate_images, evaluate_pairs, evaluate_reports

IMAGE_BLOCKS = ("fid", "kid", "prdc", "per_pathology", "psnr_ssim", "diversity", "auroc")


@pytest.fixture(scope="module")
def run(chosen, phantoms, classifier, tmp_path_factory, one_thread):  # noqa: F811
    """The CLI on the folder layout with reports and references: (its metrics.json, the layout's folder)."""
    root = tmp_path_factory.mktemp("api")
    write_layouts(chosen, root)
    folder = root / "my_images"
    main(["evaluate", f"generated={folder}", "eval.inputs.table=prompts.csv", "eval.inputs.report_column=report",
          "eval.inputs.reference_column=reference", *evaluate_overrides(phantoms, classifier), f"hydra.run.dir={root / 'run'}"])
    return json.loads((root / "run" / "metrics.json").read_text()), folder


@pytest.fixture(scope="module")
def inputs(run, phantoms, classifier):  # noqa: F811
    """What the CLI read, built by hand: generated paths / labels of their free-text prompts, the real train PA/AP images
    with their labels."""
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.text.labeler import label_reports

    folder = run[1]
    table = pd.read_csv(folder / "prompts.csv")
    index = load_index(phantoms)
    real = index[(index["split"] == "train") & index["view"].isin(["PA", "AP"]) & (index["image_path"].fillna("") != "")].reset_index(drop=True)
    return {"paths": [str(folder / name) for name in table["image"]], "labels": label_reports(table["prompt"].tolist()),
            "reports": table["report"].tolist(), "references": table["reference"].tolist(), "real": real["image_path"].tolist(),
            "real_labels": np.stack([labels_from_row(r) for r in real[list(CHEXPERT_LABELS)].to_dict("records")])}


def _images(generated, labels, inputs, classifier):  # noqa: F811
    """Every image metric, FID features and AUROC from the classifier run (as the CLI's evaluate_overrides)."""
    return evaluate_images(generated, inputs["real"], labels=labels, real_labels=inputs["real_labels"], features=str(classifier),
                           classifier=str(classifier), auroc_real=(inputs["real"], inputs["real_labels"]), kid_subsets=10,
                           per_pathology_min_n=3, auroc_n=8)


def _assert_same(api: dict, cli: dict, blocks) -> None:
    """Each block of ``api`` (as JSON would write it) equals metrics.json's, floats to 1e-9."""
    for block in blocks:
        assert _nested_equal(json.loads(json.dumps(api[block])), cli[block]), (block, api[block], cli[block])


def _nested_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_nested_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12) or (a != a and b != b)
    return a == b


def test_images_from_paths_equal_the_cli(run, inputs, classifier):  # noqa: F811
    cli, _ = run
    api = _images(inputs["paths"], inputs["labels"], inputs, classifier)
    assert api["fid"]["n_generated"] == N_GENERATED and api["per_pathology"]["labels"]["Cardiomegaly"]["n_generated"] > 0
    _assert_same(api, cli, IMAGE_BLOCKS)


def test_images_from_a_folder_an_array_and_a_tensor_with_label_strings(run, inputs, classifier):  # noqa: F811
    from cxr_irgen.data.imageio import read_image

    cli, folder = run
    strings = [format_labels(v) for v in inputs["labels"]]
    pixels = torch.stack([read_image(p) for p in inputs["paths"]])  # (32, 1, 32, 32) in [0, 1]
    for generated in (str(folder), pixels.numpy(), pixels):
        api = _images(generated, strings, inputs, classifier)
        _assert_same(api, cli, IMAGE_BLOCKS)


def test_reports_from_lists_and_a_dataframe_equal_the_cli(run, inputs, phantoms):  # noqa: F811
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.sections import load_report_sections
    from cxr_irgen.eval.report_guards import guard_texts

    cli, _ = run
    index = load_index(phantoms)
    training = guard_texts(load_report_sections(index[index["split"] == "train"]))
    blocks = ("text", "chexpert_f1", "report_label_agreement", "guards")
    from_lists = evaluate_reports(inputs["reports"], inputs["references"], conditioning_labels=inputs["labels"], training_reports=training,
                                  n_bootstrap=10, reference_section="findings")
    frame = pd.DataFrame({"report": inputs["reports"], "reference": inputs["references"], "labels": [format_labels(v) for v in inputs["labels"]]})
    from_frame = evaluate_reports(frame, training_reports=training, n_bootstrap=10, reference_section="findings")
    assert from_lists["text"]["n_reports"] == N_GENERATED
    for api in (from_lists, from_frame):
        _assert_same(api, cli, blocks)


def test_pairs_from_paths_and_a_tensor_equal_the_cli(run, inputs, classifier):  # noqa: F811
    from cxr_irgen.data.imageio import read_image

    cli, _ = run
    pixels = torch.stack([read_image(p) for p in inputs["paths"]])
    for images in (inputs["paths"], pixels):
        api = evaluate_pairs(images, inputs["reports"], inputs["labels"], classifier=str(classifier), n_bootstrap=20)
        assert api["n_pairs"] == N_GENERATED and api["image_vs_report"]["micro_f1"]["ci95"] is not None
        _assert_same({"agreement": api}, cli, ("agreement",))
