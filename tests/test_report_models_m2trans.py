"""M2Trans's label pre-training: 14 × 3 classes (blank → negative), loss drops, the saved encoder loads strictly into dve."""

from __future__ import annotations

import numpy as np
import torch

from cxr_irgen.report_models.encoders import ENCODER_FILE, build_report_encoder
from cxr_irgen.report_models.m2trans import LabelClassifier, label_classes


def test_label_values_map_to_three_classes_with_blank_negative():
    labels = np.array([[1.0, 0.0, -1.0, np.nan] + [np.nan] * 10], dtype=np.float32)
    assert label_classes(labels)[0, :4].tolist() == [2, 0, 1, 0]


def test_label_pretraining_fits_and_the_encoder_loads_into_dve(tmp_path):
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = LabelClassifier(build_report_encoder("dve-tiny"))
    images = torch.rand(8, 1, 64, 64)
    classes = torch.randint(0, 3, (8, 14))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model({"pixel_values": images, "classes": classes})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.logits(images).shape == (8, 14, 3)
    assert losses[-1] < losses[0] * 0.7, losses
    save_model(model.encoder, str(tmp_path / ENCODER_FILE))
    loaded = build_report_encoder("dve-tiny", checkpoint=str(tmp_path)).eval()
    torch.testing.assert_close(loaded(images), model.encoder.eval()(images))


def test_study_max_merge_is_order_invariant_and_one_image_is_the_single_image_path():
    from cxr_irgen.report_models.model import study_tokens

    torch.manual_seed(0)
    encoder = build_report_encoder("resnet-tiny").eval()
    pixels = torch.rand(2, 3, 1, 64, 64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    with torch.no_grad():
        merged = study_tokens(encoder, pixels, mask)
        shuffled = study_tokens(encoder, pixels[:, [2, 0, 1]], mask)
        single = encoder(pixels[1, :1])
        each = torch.stack([encoder(pixels[0, k : k + 1])[0] for k in range(3)])
    assert merged.shape == (2, encoder.num_tokens, encoder.width)
    torch.testing.assert_close(shuffled[0], merged[0])  # order of a study's images does not matter
    torch.testing.assert_close(merged[0], each.amax(dim=0))  # element-wise max of the per-image tokens
    torch.testing.assert_close(merged[1], single[0])  # one image (padding masked out) = the single-image path
    assert not torch.allclose(merged[0], each[0])  # the other images did contribute


def test_studies_group_their_images_and_train_with_the_cached_merged_tokens(phantom_root, tmp_path):
    import json

    from omegaconf import OmegaConf

    from cxr_irgen.cli import run_command
    from cxr_irgen.data.adapters import load_sections, load_table
    from cxr_irgen.report_models.train import report_pairs

    data = OmegaConf.create({"name": "phantom", "root": str(phantom_root), "cache_dir": None})
    table = load_table(data)
    sections = load_sections(table, data)
    views = ["PA", "AP", "LATERAL"]
    studies = report_pairs(table, sections, "train", views, "findings", 64, images_per_study=3)
    images = report_pairs(table, sections, "train", views, "findings", 64)
    counts = [len(p) for p in studies.image_paths]
    assert max(counts) >= 2 and sum(counts) == len(images)  # every image once, grouped by study
    assert len(set(studies.dicom_ids)) == len(studies)
    by_image = table.set_index("dicom_id")["study_id"]
    assert all(by_image.loc[ids.split("+")].nunique() == 1 for ids in studies.dicom_ids)
    item = studies[counts.index(max(counts))]
    assert item["pixel_values"].shape == (3, 1, 64, 64) and item["image_mask"].sum() == max(counts)
    assert item["pixel_values"][~item["image_mask"]].abs().sum() == 0

    run_command("train-report-model", [f"data.root={phantom_root}", "data.image_size=64", "encoder=resnet-tiny", "+encoder_args.frozen=true",
                                       "decoder=m2-tiny", "trainer=cpu-tiny", "trainer.max_steps=3", "trainer.batch_size=8", "images_per_study=3",
                                       "views=[PA,AP,LATERAL]", "evaluation.max_reports=0", f"hydra.run.dir={tmp_path}"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_pairs"] == len(studies) and metrics["images_per_study"] == 3 and metrics["steps"] == 3
    assert json.loads((tmp_path / "features.json").read_text()) == studies.dicom_ids  # the cache holds one merged entry per study
