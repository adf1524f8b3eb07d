"""One way for every command to read its data: ``load_table(cfg.data)`` dispatches on ``data.name``.

=========  ==========================================================  =====================
name       source                                                      reader
=========  ==========================================================  =====================
mimic      MIMIC-CXR-JPG 2.0.0 tree at ``data.root``                   :func:`~cxr_irgen.data.mimic.load_index`
phantom    phantom tree (same layout) at ``data.root``                 :func:`~cxr_irgen.data.mimic.load_index`
csv        a CSV of images at ``data.csv``                             :func:`~cxr_irgen.data.csv_table.load_csv_table`
iu_xray    IU X-ray reports shipped in torchxrayvision                 :func:`~cxr_irgen.data.iu_xray.iu_table`
=========  ==========================================================  =====================
"""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from cxr_irgen.data.csv_table import load_csv_table
from cxr_irgen.data.iu_xray import iu_table
from cxr_irgen.data.mimic import default_cache_dir, load_index
from cxr_irgen.data.sections import load_report_sections
from cxr_irgen.errors import UserError

MIMIC_LAYOUT = ("mimic", "phantom")
DATA_NAMES = (*MIMIC_LAYOUT, "csv", "iu_xray")


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def load_table(data_cfg: DictConfig, rebuild: bool = False) -> pd.DataFrame:
    """The index table (``load_index`` schema) of the data set described by ``data_cfg`` (the ``data`` config group)."""
    name = data_cfg.get("name")
    if name in MIMIC_LAYOUT:
        return load_index(data_cfg.root, data_cfg.get("cache_dir"), rebuild=rebuild, reports_root=data_cfg.get("reports_root"))
    if name == "csv":
        return load_csv_table(
            data_cfg.csv,
            data_cfg.get("image_root"),
            data_cfg.image_column,
            data_cfg.get("view_column"),
            _plain(data_cfg.get("label_columns")),
            data_cfg.get("text_column"),
            finding_column=data_cfg.get("finding_column"),
            finding_labels=_plain(data_cfg.get("finding_labels")),
            view_map=_plain(data_cfg.get("view_map")),
            subject_column=data_cfg.get("subject_column"),
            study_column=data_cfg.get("study_column"),
            split_column=data_cfg.get("split_column"),
            split=data_cfg.get("split", "train"),
        )
    if name == "iu_xray":
        return iu_table(data_cfg.get("root"), data_cfg.get("split", "test"), _plain(data_cfg.get("mesh_labels")))
    raise UserError(f"data.name={name!r}: use one of {', '.join(DATA_NAMES)}")


def load_sections(table: pd.DataFrame, data_cfg: DictConfig) -> pd.DataFrame:
    """(study_id, findings, impression) of ``table``'s reports, cached next to the index for MIMIC-layout data."""
    cache_dir = None
    if data_cfg.get("name") in MIMIC_LAYOUT:
        cache_dir = data_cfg.get("cache_dir") or default_cache_dir(data_cfg.root)
    return load_report_sections(table, cache_dir)
