"""The top-level Python API: ``import cxr_irgen`` stays light, its names resolve and are documented, and
``PairPipeline`` returns pairs whose images depend on their labels and seeds only."""

from __future__ import annotations

import inspect
import pydoc
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from api_runs import tiny_pair_runs
from vision_helpers import one_thread  # noqa: F401  (autouse fixture)

import cxr_irgen
from cxr_irgen.errors import UserError

OWNED = ["PairPipeline", "PairPipelineOutput", "CHEXPERT_LABELS", "parse_labels", "labels_to_prompt", "prompt_to_labels", "label_reports",
         "load_report_generator", "UserError", "register_resolver"]
SHAPED = {"PairPipeline", "PairPipelineOutput", "parse_labels", "labels_to_prompt", "prompt_to_labels", "label_reports", "load_report_generator",
          "create_report_model", "build_vision_model", "evaluate_images", "evaluate_reports", "evaluate_pairs"}  # take or return arrays
LABELS = ["Cardiomegaly=1, Edema=0", "No Finding=1"]


def test_import_loads_no_torch():
    code = "import sys, cxr_irgen; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'diffusers', 'transformers')); print(heavy)"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
    assert "cxr_irgen" in done.stderr and not re.search(r"\|\s+(torch|numpy)\b", done.stderr)  # python -X importtime's report


def test_exports_resolve_and_are_listed_with_their_shapes():
    assert set(OWNED) <= set(cxr_irgen.__all__) and set(cxr_irgen.__all__) <= set(dir(cxr_irgen))
    listed = pydoc.render_doc(cxr_irgen, renderer=pydoc.plaintext)  # what help(cxr_irgen) prints
    for name in cxr_irgen.__all__:
        assert re.search(rf"\b{name}\b", listed), f"help(cxr_irgen) does not list {name}"
        assert inspect.getdoc(getattr(cxr_irgen, name)), f"cxr_irgen.{name} has no docstring"
        if name in SHAPED:
            assert re.search(r"\((?:[NBK](?:·n)?, )?(?:14|\d, [Hh], [Ww])\)|\(14,\)", inspect.getdoc(getattr(cxr_irgen, name))), f"{name}: no shape in its docstring"
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        cxr_irgen.nonsense  # noqa: B018
    with pytest.raises(UserError, match="unknown label"):
        cxr_irgen.parse_labels("Heartache=1")
    vec = cxr_irgen.parse_labels("Cardiomegaly=1, Edema=0")
    assert np.array_equal(cxr_irgen.prompt_to_labels(cxr_irgen.labels_to_prompt(vec)), vec, equal_nan=True)
    table = cxr_irgen.label_reports(["The heart is enlarged.", "No pleural effusion."])
    assert table.shape == (2, 14) and table[0, cxr_irgen.CHEXPERT_LABELS.index("Cardiomegaly")] == 1


class _NoModel:
    """Stands in for the vision model: any call means the pipeline ran before checking its inputs."""

    image_size = 8
    encoders = SimpleNamespace(image_encoder=None)  # a text-only model: no reference pool needed

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model ran on bad input")


@pytest.mark.parametrize("labels,kwargs,match", [
    ("Heart=1, Edema=2", {}, "unknown label 'Heart'; bad value '2' for Edema"),
    (["Edema=1", ",,"], {}, r"labels\[1\] ',,' names no observation"),
    (np.zeros(13), {}, r"shape \(13,\)"),
    (np.full(14, 2.0), {}, r"values \[2.0\]"),
    ([], {}, "no label vectors"),
    (LABELS, {"n": 0}, "n=0"),
    (LABELS, {"n": 2, "seeds": [1, 2, 3]}, "3 seeds for 4 images"),
])
def test_bad_labels_raise_before_anything_runs(labels, kwargs, match):
    pipe = cxr_irgen.PairPipeline(_NoModel())
    with pytest.raises(UserError, match=match):
        pipe(labels, **kwargs)


def test_bad_run_dirs_raise_before_a_model_loads(phantom_root, tmp_path):
    started = time.perf_counter()
    with pytest.raises(UserError, match="no such folder"):
        cxr_irgen.PairPipeline.from_run_dirs(vision=tmp_path / "nope")
    with pytest.raises(UserError, match="not a cxr-irgen run dir, not a finished train-vision run"):
        cxr_irgen.PairPipeline.from_run_dirs(vision=phantom_root)
    assert time.perf_counter() - started < 5


@pytest.fixture(scope="module")
def runs(phantom_root, tmp_path_factory):
    return tiny_pair_runs(phantom_root, tmp_path_factory.mktemp("api-runs"))


@pytest.fixture(scope="module")
def pipe(runs):
    return cxr_irgen.PairPipeline.from_run_dirs(vision=runs["vision"], language=runs["prior"], device="cpu")


FAST = {"sampler": "ddim", "steps": 2, "max_length": 8}


def test_pipeline_returns_pairs_with_their_labels_seeds_and_references(pipe, phantom_root):
    from cxr_irgen.data.mimic import load_index

    out = pipe(LABELS, n=2, seeds=3, **FAST)
    size = pipe.image_size
    assert isinstance(out, cxr_irgen.PairPipelineOutput)
    assert out.image_tensor.shape == (4, 1, size, size) and out.image_tensor.dtype.is_floating_point
    assert 0 <= out.image_tensor.min() and out.image_tensor.max() <= 1
    assert [im.mode for im in out.images] == ["L"] * 4 and out.images[0].size == (size, size)
    assert np.array_equal(np.asarray(out.images[1]), (out.image_tensor[1, 0].numpy() * 255).round().astype(np.uint8))
    assert out.labels.shape == (4, 14) and np.array_equal(out.labels[1], cxr_irgen.parse_labels(LABELS[0]), equal_nan=True)
    assert out.prompts[3] == "A chest X-Ray image with no finding" and out.seeds == [3, 4, 5, 6]
    assert len(out.reports) == 4 and all(isinstance(r, str) for r in out.reports) and out.report_labels.shape == (4, 14)
    assert set(out.reference_ids) <= set(load_index(phantom_root)["dicom_id"]) and None not in out.reference_ids
    assert [r["seed"] for r in out.records] == out.seeds and out.records[0]["decoding"]["max_new_tokens"] == 8


def test_same_seed_same_image_whatever_the_batch_and_label_form(pipe):
    import torch

    out = pipe(LABELS, n=2, seeds=3, **FAST)
    again = pipe(LABELS, n=2, seeds=3, **FAST)
    assert torch.equal(out.image_tensor, again.image_tensor) and out.reports == again.reports and out.reference_ids == again.reference_ids
    arrays = pipe(np.stack([cxr_irgen.parse_labels(t) for t in LABELS]), n=2, seeds=[3, 4, 5, 6], **FAST)
    assert torch.equal(arrays.image_tensor, out.image_tensor) and arrays.reports == out.reports
    alone = pipe(LABELS[1], seeds=[5], **FAST)  # the third image of the batch, by itself: equal up to float rounding of batched convolutions
    assert torch.allclose(alone.image_tensor[0], out.image_tensor[2], atol=1e-4) and alone.reference_ids == [out.reference_ids[2]]
    assert np.abs(np.asarray(alone.images[0], dtype=int) - np.asarray(out.images[2], dtype=int)).max() <= 1
    other = pipe(LABELS[1], seeds=[6], **FAST)
    assert not torch.equal(other.image_tensor[0], alone.image_tensor[0])
    assert np.array_equal(pipe(LABELS[1], seeds=[5], batch_size=1, **FAST).images[0], alone.images[0])


def test_sampled_reports_are_drawn_from_each_seed(pipe):
    from cxr_irgen.pipeline import write_reports

    image = pipe(LABELS[1], **FAST).image_tensor
    same = image.expand(4, -1, -1, -1)
    sampled = {"do_sample": True, "top_p": 0.9, "max_length": 8}
    reports = write_reports(pipe.report_generator, same, [0, 1, 2, 3], **sampled)
    assert len(set(reports)) > 1, reports  # one image, four seeds: four draws, not one draw repeated
    assert write_reports(pipe.report_generator, same, [0, 0, 0, 0], **sampled) == [reports[0]] * 4
    assert write_reports(pipe.report_generator, same[:2], [2, 3], batch_size=1, **sampled) == reports[2:]
    records = pipe(LABELS[1], n=2, seeds=0, **FAST, do_sample=True, top_p=0.9).records
    assert [r["decoding"]["seed"] for r in records] == [0, 1]


def test_reports_that_copy_a_training_report_are_drawn_again(pipe, runs, phantom_root):
    from cxr_irgen.data.mimic import load_index
    from cxr_irgen.data.sections import load_report_sections
    from cxr_irgen.eval.report_guards import TrainingReportIndex
    from cxr_irgen.generate import training_report_index
    from cxr_irgen.pipeline import REDRAW_STRIDE, write_reports

    sampled = {**FAST, "do_sample": True, "top_p": 0.9}
    first = pipe(LABELS, n=2, seeds=0, **sampled)
    assert len(set(first.reports)) == 4, first.reports
    avoided = pipe(LABELS, n=2, seeds=0, **sampled, avoid_copies=first.reports[:2])
    index = TrainingReportIndex(first.reports[:2])
    assert all(index.nearest_copy(r) is None for r in avoided.reports) and avoided.reports[2:] == first.reports[2:]
    drawn = [r["decoding"]["seed"] for r in avoided.records]
    top_p = [r["decoding"]["top_p"] for r in avoided.records]
    assert drawn[2:] == [2, 3] and all(seed % REDRAW_STRIDE == i and seed >= REDRAW_STRIDE for i, seed in enumerate(drawn[:2]))
    assert top_p[2:] == [0.9, 0.9] and min(top_p[:2]) > 0.9  # a redraw samples more freely
    for i in (0, 1):  # each redrawn report is reproducible alone from the seed and top_p its record names
        assert write_reports(pipe.report_generator, avoided.image_tensor[i : i + 1], [drawn[i]], do_sample=True, top_p=top_p[i], max_length=8) == [avoided.reports[i]]
    with pytest.raises(UserError, match="needs do_sample=True"):
        pipe(LABELS, **FAST, avoid_copies=first.reports)
    index = load_index(phantom_root)
    sections = load_report_sections(index).set_index("study_id")
    train_study = index.loc[index["split"] == "train", "study_id"].iloc[0]
    training = training_report_index(runs["prior"])  # the training split of the data the language run records
    assert training.nearest_copy(sections.loc[train_study, "findings"]) is not None and len(training.reports) > 50


def test_images_only_without_a_language_run(pipe):
    bare = cxr_irgen.PairPipeline(pipe.vision, reference_pool=pipe.reference_pool)
    out = bare(LABELS[0], **FAST)
    assert out.reports is None and out.report_labels is None and out.reference_ids[0] is not None
    assert out.records[0]["report"] is None and out.records[0]["decoding"] is None


def test_a_reference_model_without_references_is_refused_before_it_runs(pipe, runs):
    with pytest.raises(UserError, match="conditioned on a reference image: give reference_pool="):
        cxr_irgen.PairPipeline(pipe.vision)
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"vision.reference=false, but .* is conditioned on a reference image \(conditioning.mode="):
        cxr_irgen.PairPipeline.from_run_dirs(vision=runs["vision"], reference=False)
    assert time.perf_counter() - started < 5


def test_write_reports_passes_the_requested_labels_only_to_a_generator_that_reads_them():
    import torch

    from cxr_irgen.pipeline import redraw_copies, write_reports
    from cxr_irgen.report_models.interface import ReportGenerator

    class Echo(ReportGenerator):
        """Writes each image's label vector (or "none") as its report."""
        kind, image_size = "echo", 8

        def __init__(self, reads: bool):
            self.reads = reads

        @property
        def reads_labels(self) -> bool:
            return self.reads

        def generate(self, images, labels=None, **decode):
            return ["none"] * len(images) if labels is None else [str(row.tolist()) for row in labels]

        def decoding_settings(self, **decode):
            return dict(decode)

        def to(self, device):
            return self

        @property
        def device(self):
            return torch.device("cpu")

        def save_pretrained(self, directory):
            return directory

        @classmethod
        def from_pretrained(cls, directory):
            return cls(True)

    images = torch.zeros(3, 1, 8, 8)
    labels = np.full((3, 14), np.nan, dtype=np.float32)
    labels[:, 0] = [1.0, 0.0, -1.0]
    expected = [str(torch.as_tensor(row).tolist()) for row in labels]
    for sampled in ({}, {"do_sample": True}):
        assert write_reports(Echo(True), images, [0, 1, 2], batch_size=2, labels=labels, **sampled) == expected
        assert write_reports(Echo(False), images, [0, 1, 2], labels=labels, **sampled) == ["none"] * 3
    reports = ["a copied report"] * 3
    redraw_copies(Echo(True), images, [0, 1, 2], reports, ["a copied report"], labels=labels, do_sample=True)
    assert reports == expected  # each redraw read its own image's labels
    with pytest.raises(UserError, match="takes no label vectors"):
        Echo(False)(images, labels=torch.as_tensor(labels))
