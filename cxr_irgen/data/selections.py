"""The training and test selections of DESIGN 1.1 as named functions that log their counts.

Every function takes the index table of :func:`cxr_irgen.data.mimic.load_index` (and the
report sections of :func:`cxr_irgen.data.sections.load_report_sections` where texts are
needed) and returns a new table.
"""

from __future__ import annotations

import logging

import pandas as pd

from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

FRONTAL_VIEWS = ("PA", "AP")
STAGE1_VARIANTS = ("findings", "impression", "findings+impression", "findings_impression_concat")
TEST_REQUIREMENTS = ("findings", "findings_or_impression")


SECTION_COLUMNS = ("findings", "impression")


def _has_report(index: pd.DataFrame) -> pd.Series:
    has = index["report_path"] != ""
    for column in ("report_text", *SECTION_COLUMNS):
        if column in index.columns:
            has |= index[column].fillna("") != ""
    return has


def with_sections(index: pd.DataFrame, sections: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``index`` whose study is in ``sections``, with its findings and impression columns."""
    return index.drop(columns=[c for c in SECTION_COLUMNS if c in index.columns]).merge(sections, on="study_id", how="inner")


def _one_frontal_per_study(index: pd.DataFrame) -> pd.DataFrame:
    """One image per study: PA preferred, else AP (lowest dicom_id within the view, so deterministic)."""
    frontal = index[index["view"].isin(FRONTAL_VIEWS)]
    rank = frontal["view"].map({v: i for i, v in enumerate(FRONTAL_VIEWS)})
    order = frontal.assign(_rank=rank).sort_values(["study_id", "_rank", "dicom_id"], kind="stable")
    return order.drop_duplicates("study_id").drop(columns="_rank").reset_index(drop=True)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{name}={value!r}: use one of {', '.join(allowed)}")


def vision_train(index: pd.DataFrame) -> pd.DataFrame:
    """PA images of the train split (the vision module's training set)."""
    selected = index[(index["split"] == "train") & (index["view"] == "PA")].reset_index(drop=True)
    log.info("vision_train: %d PA train images (of %d train images)", len(selected), int((index["split"] == "train").sum()))
    return selected


def stage1_texts(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The rows of ``frame`` (with findings and impression columns) repeated once per text of a stage-1 variant,
    in a new ``text`` column; rows without the needed section(s) are dropped.

    - ``findings`` / ``impression``: that section alone;
    - ``findings+impression`` (the paper): each section its own sample, so a report with both gives
      two rows (findings rows first, then impression rows);
    - ``findings_impression_concat``: one text, the two sections joined with a space.
    A combined FINDINGS AND IMPRESSION section (the same text in both columns) counts once.
    """
    _check_choice("variant", variant, STAGE1_VARIANTS)
    findings, impression = frame["findings"].fillna(""), frame["impression"].fillna("")
    combined = findings == impression
    if variant == "findings+impression":
        parts = [frame.assign(text=findings), frame.assign(text=impression.where(~combined, ""))]
        texts = pd.concat(parts, ignore_index=True)
    elif variant == "findings_impression_concat":
        texts = frame.assign(text=(findings + " " + impression).str.strip().where(~combined, findings))
    else:
        texts = frame.assign(text=frame[variant].fillna(""))
    return texts[texts["text"] != ""].reset_index(drop=True)


def language_stage1(index: pd.DataFrame, sections: pd.DataFrame, variant: str = "findings") -> pd.DataFrame:
    """(study_id, text) of every train study's ``variant`` text(s) (:func:`stage1_texts`), sorted by study."""
    train_studies = index.loc[index["split"] == "train", "study_id"].unique()
    texts = stage1_texts(sections[sections["study_id"].isin(train_studies)], variant)
    selected = texts[["study_id", "text"]].sort_values("study_id", kind="stable").reset_index(drop=True)
    log.info("language_stage1[%s]: %d texts from %d train studies", variant, len(selected), len(train_studies))
    return selected


def language_stage2(index: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """One image per ``split`` study that has a report: PA preferred, else AP."""
    selected = _one_frontal_per_study(index[(index["split"] == split) & _has_report(index)])
    log.info("language_stage2[%s]: %d studies with a report and a frontal image (%d PA, %d AP)", split, len(selected), int((selected["view"] == "PA").sum()), int((selected["view"] == "AP").sum()))
    return selected


def vision_test(index: pd.DataFrame, n: int = 1000, seed: int = 1234) -> pd.DataFrame:
    """``n`` random PA test images (all of them when there are fewer), in a seeded order."""
    pa = index[(index["split"] == "test") & (index["view"] == "PA")]
    if len(pa) < n:
        log.warning("vision_test: only %d PA test images, fewer than n=%d; using all of them", len(pa), n)
    selected = pa.sample(n=min(n, len(pa)), random_state=seed).reset_index(drop=True)
    log.info("vision_test: %d random PA test images (seed %d, of %d)", len(selected), seed, len(pa))
    return selected


def language_test(index: pd.DataFrame, sections: pd.DataFrame, require: str = "findings") -> pd.DataFrame:
    """Frontal test image/report pairs, one per study (PA preferred, else AP), with columns findings and impression.

    ``require="findings"`` keeps studies with a findings section; ``"findings_or_impression"``
    those with either.
    """
    _check_choice("require", require, TEST_REQUIREMENTS)
    pairs = with_sections(_one_frontal_per_study(index[index["split"] == "test"]), sections)
    keep = pairs["findings"] != ""
    if require == "findings_or_impression":
        keep |= pairs["impression"] != ""
    selected = pairs[keep].reset_index(drop=True)
    log.info("language_test[%s]: %d frontal test image/report pairs", require, len(selected))
    return selected
