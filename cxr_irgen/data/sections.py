"""FINDINGS and IMPRESSION sections of free-text radiology reports.

MIMIC-CXR reports are wrapped free text with headers such as ``FINDINGS:``,
``IMPRESSION:``, ``FINDINGS AND IMPRESSION:``, ``FINDINGS/IMPRESSION``, in upper or lower
case, sometimes missing. A header is recognised

* at the start of a line, any case, when it is one of :data:`KNOWN_HEADERS`, followed by
  a colon or by the end of the line;
* anywhere, when it is written in capitals and followed by a colon (``WET READ:``,
  ``INDICATION:`` mid-line).

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
KNOWN_HEADERS = (
    "FINDINGS AND IMPRESSIONS?", "IMPRESSIONS? AND FINDINGS", "FINDINGS ?/ ?IMPRESSIONS?", "IMPRESSIONS? ?/ ?FINDINGS",
    "FINDINGS?", "IMPRESSIONS?", "CONCLUSIONS?", "COMPARISONS?", "INDICATIONS?", "HISTORY", "CLINICAL HISTORY",
    "CLINICAL INFORMATION", "REASON FOR EXAM(?:INATION)?", "EXAM(?:INATION)?", "TECHNIQUE", "PROCEDURE",
    "NOTIFICATIONS?", "RECOMMENDATIONS?", r"RECOMMENDATION\(S\)", "WET READ", "FINAL REPORT", "ADDENDUM", "COMMENTS?",
)
_LINE_HEADER = re.compile(r"[ \t]*(" + "|".join(KNOWN_HEADERS) + r")[ \t\r]*(?::|$)", re.IGNORECASE)
_HEADER_PREFIXES = frozenset(re.sub(r"[^A-Z ]", "", h)[:4] for h in KNOWN_HEADERS)  # cheap pre-check before the regex
_CAPS_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ()/& \t")


@functools.lru_cache(maxsize=1024)
def _kind(header: str) -> tuple[bool, bool]:
    """(is findings, is impression) for a matched header."""
    words = set(re.split(r"[ /&]+", header.upper())) - {"AND", ""}
    return bool(words & set(FINDINGS_HEADERS)), bool(words & set(IMPRESSION_HEADERS)) and words <= {*FINDINGS_HEADERS, *IMPRESSION_HEADERS}


def _caps_header_start(line: str, colon: int) -> int:
    """Start of the capitals header ending at ``line[colon] == ":"``, or -1 when the text before the colon is not one."""
    start = colon
    while start > 0 and line[start - 1] in _CAPS_CHARS:
        start -= 1
    while start < colon and not line[start].isalpha():
        start += 1
    if colon - start < 2 or (start > 0 and line[start - 1].isalpha()):
        return -1
    return start


def _headers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, header) of every header in ``text``, in order.

    Works line by line: an anchored match on lines starting like a known header, and a look
    back from each colon for capitals, several times faster than one unanchored regex over the whole text.
    """
    found, offset = [], 0
    for line in text.splitlines(keepends=True):
        match = _LINE_HEADER.match(line) if line.lstrip(" \t")[:4].upper() in _HEADER_PREFIXES else None
        if match:
            found.append((offset + match.start(1), offset + match.end(), match.group(1)))
        colon = line.find(":", match.end() if match else 0)
        while colon >= 0:
            start = _caps_header_start(line, colon)
            if start >= 0:
                found.append((offset + start, offset + colon + 1, line[start:colon].rstrip()))
            colon = line.find(":", colon + 1)
        offset += len(line)
    return found


def extract_sections(text: str) -> dict[str, str]:
    """``{"findings": ..., "impression": ...}`` of one report ('' for a missing section)."""
    found: dict[str, list[str]] = {"findings": [], "impression": []}
    headers = _headers(text)
    for (_, end, header), following in zip(headers, [*headers[1:], None]):
        is_findings, is_impression = _kind(header)
        if not (is_findings or is_impression):
            continue
        body = " ".join(text[end : following[0] if following else len(text)].split())
        if not body:
            continue
        if is_findings:
            found["findings"].append(body)
        if is_impression:
            found["impression"].append(body)
    return {name: " ".join(parts) for name, parts in found.items()}


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
    from tqdm.auto import tqdm

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
    for study_id, value in tqdm(zip(studies["study_id"], studies[source]), total=len(studies), desc="report sections", mininterval=1.0):
        found = extract_sections(value) if has_text else extract_sections(_read_report(value))
        if has_text and not (found["findings"] or found["impression"]):
            found["findings"] = " ".join(value.split())
        rows.append((study_id, found["findings"], found["impression"]))
    sections = pd.DataFrame(rows, columns=["study_id", "findings", "impression"]).astype({"study_id": "int64", "findings": "str", "impression": "str"})
    log.info("report sections of %d studies: %d with findings, %d with impression", len(sections), (sections["findings"] != "").sum(), (sections["impression"] != "").sum())
    if cache_file is not None:
        write_cache(sections, cache_file)
    return sections
