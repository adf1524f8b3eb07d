"""FINDINGS and IMPRESSION sections of free-text radiology reports.

MIMIC-CXR reports are wrapped free text with headers such as ``FINDINGS:``,
``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``, ``FINDINGS/IMPRESSION``, in upper or lower
case, sometimes missing. A header is recognised

* at the start of a line (after spaces), any case, when it is one of :data:`KNOWN_HEADERS`,
  followed by a colon or by the end of the line;
* at the start of a line, when it is written in capitals and followed by a colon (``WET READ:``,
  ``PROVISIONAL FINDINGS IMPRESSION (PFI):``), as in MIMIC-CXR's own section parser;
* mid-line only when it is one of :data:`KNOWN_HEADERS` in capitals followed by a colon
  (``INDICATION: cough. FINDINGS: clear. IMPRESSION: normal.``). Other capitals before a colon
  inside a line are text: "The patient is in the ICU: lines unchanged", "KUB XXXX: single view".

A section runs from its header to the next header of any kind. A combined header
(``FINDINGS AND IMPRESSION``) fills both sections; repeated sections are joined; ``CONCLUSION``
counts as an impression. Whitespace is collapsed to single spaces; a missing section is ''.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from pathlib import Path

import pandas as pd

from cxr_irgen.data.cache import write_cache

log = logging.getLogger(__name__)

FINDINGS_HEADERS = ("FINDINGS", "FINDING")
IMPRESSION_HEADERS = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS")
_BOTH = [f"{a}{sep}{b}" for f, i in (("FINDINGS", "IMPRESSION"), ("FINDINGS", "IMPRESSIONS")) for a, b in ((f, i), (i, f)) for sep in (" AND ", "/", " /", "/ ", " / ")]
KNOWN_HEADERS = frozenset({
    *_BOTH, *FINDINGS_HEADERS, *IMPRESSION_HEADERS, "COMPARISON", "COMPARISONS", "INDICATION", "INDICATIONS", "HISTORY",
    "CLINICAL HISTORY", "CLINICAL INFORMATION", "REASON FOR EXAM", "REASON FOR EXAMINATION", "EXAM", "EXAMINATION", "TECHNIQUE",
    "PROCEDURE", "NOTIFICATION", "NOTIFICATIONS", "RECOMMENDATION", "RECOMMENDATIONS", "RECOMMENDATION(S)", "WET READ",
    "FINAL REPORT", "ADDENDUM", "COMMENT", "COMMENTS",
})
_LONGEST_BARE_LINE = 64  # a header alone on its line is at most this long, indentation included
_CAPS_HEADER = re.compile(r"[A-Z][A-Z()/& \t]*")
# A known header in capitals followed by a colon, inside a line (longest spelling first).
_INLINE_HEADER = re.compile(rf"(?<![A-Za-z])({'|'.join(re.escape(h) for h in sorted(KNOWN_HEADERS, key=len, reverse=True))})[ \t]*:")


@functools.lru_cache(maxsize=1024)
def _kind(header: str) -> tuple[bool, bool]:
    """(is findings, is impression) for a header."""
    words = set(re.split(r"[ /&]+", header.upper())) - {"AND", ""}
    return bool(words & set(FINDINGS_HEADERS)), bool(words & set(IMPRESSION_HEADERS)) and words <= {*FINDINGS_HEADERS, *IMPRESSION_HEADERS}


@functools.lru_cache(maxsize=4096)
def _line_start_kind(head: str) -> tuple[bool, bool] | None:
    """The kind of the header that a line's text before its first colon is, None when it is text."""
    words = head.strip(" \t")
    if words.upper() in KNOWN_HEADERS or (len(words) >= 2 and _CAPS_HEADER.fullmatch(words)):
        return _kind(words)
    return None


@functools.lru_cache(maxsize=4096)
def _bare_kind(line: str) -> tuple[bool, bool] | None:
    """The kind of the known header that a line without a colon is (alone, any case), None when it is text."""
    words = line.strip()
    return _kind(words) if words.upper() in KNOWN_HEADERS else None


def _open(kind: tuple[bool, bool], opened: list) -> list[str] | None:
    """Start a section of ``kind``: its (empty) list of text pieces when it is findings and/or impression, else None."""
    if not (kind[0] or kind[1]):
        return None
    pieces: list[str] = []
    opened.append((kind, pieces))
    return pieces


def extract_sections(text: str) -> dict[str, str]:
    """``{"findings": ..., "impression": ...}`` of one report ('' for a missing section).

    One pass over the lines with str methods (a line without a colon costs one set lookup);
    the regex for inline headers runs only on the rare lines with a colon after their start.
    """
    opened: list[tuple[tuple[bool, bool], list[str]]] = []
    pieces = None  # the open findings/impression section's text, None outside one
    for line in text.splitlines():
        if ":" not in line:
            bare = _bare_kind(line) if len(line) <= _LONGEST_BARE_LINE else None
            if bare is not None:
                pieces = _open(bare, opened)
            elif pieces is not None:
                pieces.append(line)
            continue
        head, _, rest = line.partition(":")
        kind = _line_start_kind(head)
        if kind is None:
            rest = line
        else:
            pieces = _open(kind, opened)
        if ":" in rest:
            start = 0
            for inline in _INLINE_HEADER.finditer(rest):
                if pieces is not None:
                    pieces.append(rest[start : inline.start()])
                pieces = _open(_kind(inline.group(1)), opened)
                start = inline.end()
            rest = rest[start:]
        if pieces is not None:
            pieces.append(rest)
    findings, impression = [], []
    for (is_findings, is_impression), section in opened:
        body = " ".join(" ".join(section).split())
        if body and is_findings:
            findings.append(body)
        if body and is_impression:
            impression.append(body)
    return {"findings": " ".join(findings), "impression": " ".join(impression)}


def _read_report(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def load_report_sections(index: pd.DataFrame, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """(study_id, findings, impression) for every study of ``index`` with a report.

    Reports come from ``report_path`` files, from ``findings``/``impression`` columns when
    the table has them (IU X-ray), or from a ``report_text`` column when the table has one (CSV adapter; a text without any FINDINGS/IMPRESSION header is taken
    as the findings). Cached as parquet in ``cache_dir`` keyed by the report
    paths/texts, so a second call reads no report files.
    """
    from cxr_irgen.utils.progress import progress_bar

    if {"findings", "impression"} <= set(index.columns):
        return index[["study_id", "findings", "impression"]].drop_duplicates("study_id").reset_index(drop=True)
    has_text = "report_text" in index.columns
    source = "report_text" if has_text else "report_path"
    studies = index.loc[index[source].fillna("") != "", ["study_id", source]].drop_duplicates("study_id")
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha1("\n".join(studies["study_id"].astype(str) + "\t" + studies[source]).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"sections-{digest}.parquet"
        if cache_file.is_file():
            return pd.read_parquet(cache_file)
    rows = []
    for study_id, value in progress_bar(zip(studies["study_id"], studies[source]), total=len(studies), desc="report sections", mininterval=1.0):
        found = extract_sections(value) if has_text else extract_sections(_read_report(value))
        if has_text and not (found["findings"] or found["impression"]):
            found["findings"] = " ".join(value.split())
        rows.append((study_id, found["findings"], found["impression"]))
    sections = pd.DataFrame(rows, columns=["study_id", "findings", "impression"]).astype({"study_id": "int64", "findings": "str", "impression": "str"})
    log.info("report sections of %d studies: %d with findings, %d with impression", len(sections), (sections["findings"] != "").sum(), (sections["impression"] != "").sum())
    if cache_file is not None:
        write_cache(sections, cache_file)
    return sections
