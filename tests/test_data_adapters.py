"""Adapters: IU X-ray as a table, the generic CSV adapter on the real covid-cxr images, load_table dispatch, bad CSVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from cxr_irgen.configs import __file__ as configs_init
from cxr_irgen.data.adapters import load_sections, load_table
from cxr_irgen.data.csv_table import load_csv_table
from cxr_irgen.data.datasets import VisionDataset
from cxr_irgen.data.iu_xray import iu_table, mesh_to_labels
from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX
from cxr_irgen.data.mimic import INDEX_COLUMNS
from cxr_irgen.data.reference import ReferenceIndex
from cxr_irgen.data.selections import vision_train
from cxr_irgen.errors import UserError


def data_config(name: str, **overrides):
    from pathlib import Path

    cfg = OmegaConf.load(Path(configs_init).parent / "data" / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def test_mesh_mapping():
    assert mesh_to_labels("normal")[LABEL_INDEX["No Finding"]] == 1
    labels = mesh_to_labels("Cardiomegaly/mild; Pulmonary Atelectasis/base/left; Calcified Granuloma")
    assert {CHEXPERT_LABELS[i] for i in np.flatnonzero(labels == 1)} == {"Cardiomegaly", "Atelectasis"}
    assert np.isnan(mesh_to_labels("Calcified Granuloma")).all()
    with pytest.raises(UserError, match="unknown label 'Heart'"):
        mesh_to_labels("Cardiomegaly", {"Cardiomegaly": "Heart"})


def test_iu_table_via_load_table():
    table = load_table(data_config("iu_xray"))
    assert list(table.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS) and len(table) == 7470
    assert table["study_id"].nunique() == 3851 and set(table["split"]) == {"test"}
    assert (table["view"] == "PA").sum() == 3593 and (table["image_path"] == "").all()
    first = table.iloc[0]
    assert first["dicom_id"] == "CXR1_1_IM-0001-3001" and first["view"] == "PA" and first["No Finding"] == 1
    sections = load_sections(table, data_config("iu_xray"))
    assert len(sections) == 3851 and sections.set_index("study_id").loc[1, "impression"] == "Normal chest x-XXXX."
    assert iu_table("/images")["image_path"].iloc[0] == "/images/CXR1_1_IM-0001-3001.png"


def covid_config(shared_data, **overrides):
    return data_config("csv", csv=str(shared_data / "covid-cxr" / "metadata.csv"), image_root=str(shared_data / "covid-cxr" / "images"), **overrides)


def test_covid_csv_real_images(shared_data):
    table = load_table(covid_config(shared_data))
    assert list(table.columns) == [*INDEX_COLUMNS, "report_text"]
    assert len(table) == 609  # 614 rows, 5 repeat an image
    assert table["view"].value_counts().to_dict() == {"PA": 305, "AP": 250, "LATERAL": 54}
    assert table["dicom_id"].is_unique and table["subject_id"].nunique() == 333
    finding = pd.read_csv(shared_data / "covid-cxr" / "metadata.csv").drop_duplicates("filename")["finding"]
    assert table["Pneumonia"].eq(1).sum() == (~finding.isin(["No Finding", "todo", "ARDS"])).sum()
    assert table["No Finding"].eq(1).sum() == (finding == "No Finding").sum()
    assert table["Lung Opacity"].eq(1).sum() == finding.isin(["ARDS", "COVID-19, ARDS"]).sum()
    assert table[list(CHEXPERT_LABELS)].isna().all(axis=1).sum() == (finding == "todo").sum()  # unlabelled stays blank
    sections = load_sections(table, covid_config(shared_data))
    assert len(sections) == 498 and sections["findings"].str.len().gt(0).all()
    pa = vision_train(table)
    dataset = VisionDataset(pa.head(6), 32, ReferenceIndex.from_index(table))
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["pixel_values"].shape == (1, 32, 32) and float(item["pixel_values"].std()) > 0.02
        assert item["reference_id"] != item["dicom_id"]


def _write(tmp_path, rows: str):
    (tmp_path / "t.csv").write_text(rows)
    return tmp_path / "t.csv"


def test_label_columns_and_split_column(tmp_path):
    csv = _write(tmp_path, "path,pos,cardio,effusion,part,report\na.png,PA,1,-1,TEST,FINDINGS: big heart. IMPRESSION: cardiomegaly.\nb.png,ap,,0,train,\n")
    table = load_csv_table(csv, None, "path", "pos", {"cardio": "cardiomegaly", "effusion": "Effusion"}, "report", split_column="part")
    assert table["image_path"].tolist() == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert table["view"].tolist() == ["PA", "AP"] and table["split"].tolist() == ["test", "train"]
    assert table["Cardiomegaly"].tolist()[0] == 1 and np.isnan(table["Cardiomegaly"].tolist()[1])
    assert table["Pleural Effusion"].tolist() == [-1, 0]
    assert load_sections(table, data_config("csv", csv=str(csv))).set_index("study_id").loc[1, "impression"] == "cardiomegaly."


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_column": "file"}, "lacks column\\(s\\) file; it has: path, cardio"),
        ({"label_columns": {"cardio": "Heart Size"}}, "unknown label 'Heart Size'; valid labels: No Finding"),
        ({"finding_column": "cardio", "finding_labels": {"1": "Cardiomegaly=2"}}, "bad value '2' for Cardiomegaly"),
        ({"label_columns": {"cardio": "Cardiomegaly"}}, "column 'Cardiomegaly' has value 'yes'"),
    ],
)
def test_bad_csv_inputs(tmp_path, kwargs, message):
    csv = _write(tmp_path, "path,cardio\na.png,1\nb.png,yes\n")
    with pytest.raises(UserError, match=message):
        load_csv_table(csv, **{"image_column": "path", **kwargs})


def test_missing_or_empty_csv(tmp_path):
    with pytest.raises(UserError, match="CSV not found"):
        load_csv_table(tmp_path / "none.csv")
    with pytest.raises(UserError, match="has no rows"):
        load_csv_table(_write(tmp_path, "filename\n"))
    (tmp_path / "bin.csv").write_bytes(b"\x00\xff\xfe garbage \x00\n\x01")
    with pytest.raises(UserError, match=r"cannot read CSV .*bin\.csv: 'utf-8' codec can't decode") as err:
        load_csv_table(tmp_path / "bin.csv")
    assert "\n" not in str(err.value)


def test_unknown_data_name():
    with pytest.raises(UserError, match="data.name='nih': use one of mimic, phantom, csv, iu_xray"):
        load_table(OmegaConf.create({"name": "nih"}))


def test_table_round_trips_through_parquet(shared_data, tmp_path):
    table = load_table(covid_config(shared_data))
    table.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), table)
