"""M2Trans's label pre-training: 14 × 3 classes (blank → negative), loss drops, the saved encoder loads strictly into dve."""

from __future__ import annotations

import numpy as np
import torch

from cxr_irgen.report_models.encoders import ENCODER_FILE, build_encoder
from cxr_irgen.report_models.m2trans import LabelClassifier, label_classes


def test_label_values_map_to_three_classes_with_blank_negative():
    labels = np.array([[1.0, 0.0, -1.0, np.nan] + [np.nan] * 10], dtype=np.float32)
    assert label_classes(labels)[0, :4].tolist() == [2, 0, 1, 0]


def test_label_pretraining_fits_and_the_encoder_loads_into_dve(tmp_path):
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = LabelClassifier(build_encoder("dve-tiny"))
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
    loaded = build_encoder("dve-tiny", {"checkpoint": str(tmp_path)}).eval()
    torch.testing.assert_close(loaded(images), model.encoder.eval()(images))
