"""Report sections: hand-written MIMIC header variants, real IU X-ray reports, the cached loader."""

from __future__ import annotations

import pandas as pd
import pytest
from data_tree import write_tree

from cxr_irgen.data import sections as sections_module
from cxr_irgen.data.iu_xray import load_iu_reports
from cxr_irgen.data.mimic import load_index
from cxr_irgen.data.sections import extract_sections, load_report_sections

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.

 NOTIFICATION:  The findings were discussed with Dr. ___ at 10:30.
"""


@pytest.mark.parametrize(
    "text, findings, impression",
    [
        (MIMIC_REPORT, "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities that most likely represent nipple shadows.", "No acute cardiopulmonary process."),
        ("Findings: heart normal.\nImpression: normal chest", "heart normal.", "normal chest"),
        ("findings:\n  Lungs\n  clear.\nINDICATION: cough", "Lungs clear.", ""),
        ("FINDINGS AND IMPRESSION: Lungs clear.\nRECOMMENDATION(S): Follow-up CT.", "Lungs clear.", "Lungs clear."),
        ("FINDINGS/IMPRESSION\nLungs clear. Heart size: normal.", "Lungs clear. Heart size: normal.", "Lungs clear. Heart size: normal."),
        ("INDICATION: cough. FINDINGS: Lungs clear. IMPRESSION: Normal. COMPARISON: none", "Lungs clear.", "Normal."),
        ("IMPRESSION:\n small effusion\n\nCOMPARISON: prior", "", "small effusion"),
        ("WET READ: no pneumothorax\nEXAMINATION: chest", "", ""),
        ("", "", ""),
        ("FINDINGS:\nFirst part.\nADDENDUM:\nFINDINGS: Second part.", "First part. Second part.", ""),
        ("CONCLUSION: Stable.", "", "Stable."),
    ],
)
def test_header_variants(text, findings, impression):
    assert extract_sections(text) == {"findings": findings, "impression": impression}


ICU_REPORT = """                                 FINAL REPORT
 INDICATION:  ___M intubated, assess lines.

 COMPARISON:  Chest radiograph ___.

 FINDINGS:

 The patient is in the ICU: lines and tubes are unchanged. Right IJ: tip in the
 low SVC. Compared to the prior CT: no new opacity.
 NG tube courses below the diaphragm.

 IMPRESSION:  Stable support devices; PICC: unchanged.
"""


@pytest.mark.parametrize(
    "text, findings, impression",
    [
        (
            ICU_REPORT,
            "The patient is in the ICU: lines and tubes are unchanged. Right IJ: tip in the low SVC. Compared to the prior CT: no new opacity. NG tube courses below the diaphragm.",
            "Stable support devices; PICC: unchanged.",
        ),
        # capitals before a colon count as a header at a line start only
        ("FINDINGS: Lines: ETT 4 cm above the carina, NGT in the stomach.\nPICC: tip in the SVC.\nIMPRESSION: Lines in place.", "Lines: ETT 4 cm above the carina, NGT in the stomach.", "Lines in place."),
        # MIMIC's known headers in capitals count mid-line too
        ("EXAMINATION: CHEST PA. FINDINGS AND IMPRESSION: No change since the AP: film.", "No change since the AP: film.", "No change since the AP: film."),
        # a known word in prose is no header
        ("FINDINGS: Findings were discussed with the impression: stable.\n", "Findings were discussed with the impression: stable.", ""),
    ],
)
def test_headers_only_at_line_starts_or_known_inline(text, findings, impression):
    assert extract_sections(text) == {"findings": findings, "impression": impression}


def test_real_iu_reports_round_trip_under_mimic_headers():
    """Every real IU X-ray findings/impression text comes back whole when wrapped in MIMIC headers, except
    CXR2415, whose impression text itself holds "IMPRESSION: ... FINDINGS: ..." headers; the texts have
    mid-line capitals before colons ("KUB XXXX: single view", CXR3608) that must stay text."""
    reports = load_iu_reports()
    changed = set()
    for row in reports.itertuples():
        text = f" COMPARISON: None.\n\n FINDINGS:\n {row.findings}\n\n IMPRESSION:\n {row.impression}\n"
        if extract_sections(text) != {"findings": row.findings, "impression": row.impression}:
            changed.add(row.uid)
    assert changed == {"CXR2415"}


def test_real_iu_reports_counts_and_sections():
    reports = load_iu_reports()
    assert len(reports) == 3955
    has_findings, has_impression = reports["findings"] != "", reports["impression"] != ""
    assert (has_findings.sum(), has_impression.sum(), (has_findings & has_impression).sum()) == (3425, 3921, 3419)
    assert reports["normal"].sum() == 1391
    first = reports.iloc[0]
    assert first["uid"] == "CXR1" and first["impression"] == "Normal chest x-XXXX." and first["findings"].startswith("The cardiac silhouette and mediastinum size")
    # IU texts re-wrapped under MIMIC headers come back through the free-text extractor unchanged
    for row in reports.head(200).itertuples():
        text = f"COMPARISON: None.\nFINDINGS:\n{row.findings}\n\nIMPRESSION:\n{row.impression}\n"
        assert extract_sections(text) == {"findings": row.findings, "impression": row.impression}


def test_load_report_sections_reads_each_study_once_and_caches(tmp_path, monkeypatch):
    index = load_index(write_tree(tmp_path / "m"), cache_dir=tmp_path / "c")
    sections = load_report_sections(index, cache_dir=tmp_path / "c")
    assert sorted(sections["study_id"]) == [50000001, 50000002, 50000003, 50000004, 50000006, 50000007, 50000008, 50000009]
    by_study = sections.set_index("study_id")
    assert by_study.loc[50000002, "findings"] == "Enlarged heart, no edema." and by_study.loc[50000002, "impression"] == ""
    assert by_study.loc[50000004, "findings"] == by_study.loc[50000004, "impression"] == "Normal chest."

    def no_reading(path):
        raise AssertionError("read a report although the sections are cached")

    monkeypatch.setattr(sections_module, "_read_report", no_reading)
    pd.testing.assert_frame_equal(load_report_sections(index, cache_dir=tmp_path / "c"), sections)
    with pytest.raises(AssertionError):
        load_report_sections(index)  # no cache folder: reads again


def test_report_text_column_without_headers_is_findings():
    table = pd.DataFrame({"study_id": [1, 2, 3], "report_text": ["Patchy  opacity\nright base.", "FINDINGS: a. IMPRESSION: b.", ""]})
    sections = load_report_sections(table).set_index("study_id")
    assert sections.loc[1, "findings"] == "Patchy opacity right base." and sections.loc[2, "impression"] == "b."
    assert 3 not in sections.index
