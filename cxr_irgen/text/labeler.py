"""In-house rule-based CheXpert labeler: free-text report → 14 labels (1 / 0 / -1 / blank).

Follows the CheXpert labeler's three stages (Irvin et al., AAAI 2019) with regular
expressions instead of a dependency parser:

1. *Mention extraction*: each sentence is cut into clauses at scope boundaries ("but",
   "however", ";", a comma that starts a new clause, ...) and searched for the mention
   phrases of each observation. Two kinds of phrase: *findings* ("cardiomegaly",
   "pleural effusion") and *attributes* of a structure ("heart size", "cardiomediastinal
   silhouette"), which only count together with a qualifier in the same clause
   ("normal" → negative, "enlarged" → positive, "borderline" → uncertain).
2. *Classification* of each mention, in CheXpert's order: negated uncertainty
   ("cannot exclude X", "X is not excluded") → uncertain; negation before the mention
   in scope ("no", "without", "no evidence of X or Y", "free of") or after it
   ("X is not seen", "X has resolved") → negative; uncertainty ("possible", "may",
   "suggest", "likely", "versus", "concerning for", "X or Y", "?") → uncertain; else
   positive. "No change in X", "unchanged X", "stable X" stay positive, as in CheXpert.
3. *Aggregation* per report: positive if any mention is positive, else uncertain if
   any is uncertain, else negative; blank when never mentioned. No Finding is 1 when no
   observation other than Support Devices is positive or uncertain, else blank.

Throughput is several thousand reports/s on one core (``benchmarks/eval.py``): all
patterns are compiled once at import, and clauses without any mention are skipped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cxr_irgen.data.labels import CHEXPERT_LABELS, LABEL_INDEX, NEGATIVE, NUM_LABELS, POSITIVE, UNCERTAIN
from cxr_irgen.errors import UserError

log = logging.getLogger(__name__)

NO_FINDING = LABEL_INDEX["No Finding"]
SUPPORT_DEVICES = LABEL_INDEX["Support Devices"]

# Finding phrases per observation (regex fragments; matched on lower-cased text at word boundaries).
FINDING_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"enlarged cardiomediastin\w*",
        r"(?:mediastinal|cardiomediastinal) (?:widening|enlargement)",
        r"widen(?:ed|ing) (?:of the )?(?:superior )?(?:cardio)?mediastin\w*",
        r"wide (?:superior )?mediastinum",
        r"enlarged (?:superior )?mediastin\w*",
        r"mediastinal (?:mass|shift)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"(?:enlarged|large|prominent|dilated) (?:heart|cardiac (?:silhouette|shadow|contour|size))",
        r"cardiac enlargement",
        r"enlargement of the (?:heart|cardiac silhouette)",
    ),
    "Lung Opacity": (
        r"opaci(?:ty|ties|fication|fications|fied)",
        r"infiltrat(?:e|es|ion|ive)",
        r"air[- ]?space (?:disease|process)",
        r"haziness|hazy",
        r"(?:increased|parenchymal) densit(?:y|ies)",
        r"interstitial (?:markings?|pattern|prominence|thickening|disease|lung disease|changes?)",
        r"reticular (?:pattern|markings?|opacit\w*)|reticulation",
        r"(?:lung|pulmonary|parenchymal) scarring|scar(?:ring|s)?",
        r"peribronchial (?:thickening|cuffing)",
        r"bronchial wall thickening",
        r"fibrosis|fibrotic (?:changes?|scarring)",
    ),
    "Lung Lesion": (
        r"nodul(?:e|es|ar (?:density|densities|opacity|opacities|opacification|lesions?))",
        r"(?<!soft tissue )mass(?:es)?",
        r"(?:lung|pulmonary|cavitary|spiculated) lesions?",
        r"tumou?r|neoplasm|carcinoma|malignancy|metasta\w+",
        r"lump|cavitation|cavitary",
    ),
    "Edema": (
        r"(?<!soft tissue )o?edema",
        r"(?:congestive )?heart failure|\bchf",
        r"(?:pulmonary |central )?vascular (?:congestion|engorgement|prominence|redistribution|plethora)",
        r"pulmonary (?:venous )?congestion",
        r"cephalization",
        r"indistinct(?:ness of the|) (?:pulmonary )?vessels|vascular indistinctness",
        r"kerley b(?: lines)?",
        r"fluid overload",
    ),
    "Consolidation": (r"consolidat(?:ion|ions|ive|ed)",),
    "Pneumonia": (r"pneumonias?", r"infection", r"infectious (?:process|etiology|disease)?", r"bronchopneumonia"),
    "Atelectasis": (r"atelecta\w+", r"(?<!vertebral )(?<!vertebral body )collapse[ds]?"),
    "Pneumothorax": (r"(?:hydro)?pneumothora(?:x|ces)", r"pneumothoraxes"),
    "Pleural Effusion": (
        r"(?<!pericardial )(?<!joint )effusions?",
        r"pleural fluid|fluid in the pleural space|hydrothorax|hydrothoraces",
        r"blunt(?:ing|ed) of (?:the )?(?:right |left |bilateral )?costophrenic",
        r"(?:costophrenic|cp) angle blunting|blunted (?:right |left |bilateral )?(?:costophrenic|cp) angles?",
        r"layering fluid",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|scar(?:ring)?|calcifications?|fibrosis|abnormalit(?:y|ies))",
        r"fibrothorax",
        r"pleural[- ]parenchymal scarring",
        r"apical (?:pleural )?(?:cap|thickening)",
    ),
    "Fracture": (r"fractur(?:e|es|ed)", r"\bfx"),
    "Support Devices": (
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|enteric|feeding|chest|drainage|thoracostomy|et|ng|og|dobhoff|trach) tubes?",
        r"(?:picc|central(?: venous)?|venous|arterial|midline|jugular|subclavian|swan[- ]ganz|hemodialysis|dialysis) (?:lines?|catheters?)",
        r"catheters?|picc",
        r"pacemakers?|pacer|defibrillators?|aicd|\bicd|pacing (?:leads?|wires?)|(?:cardiac |pacer |pacemaker )?leads",
        r"(?:support |monitoring |implanted |medical |cardiac |electronic )devices?",
        r"port[- ]?a[- ]?cath|(?:chest |infusion |subcutaneous )port",
        r"stents?|(?:prosthetic |mechanical )?(?:aortic |mitral )?valve replacement|lvad|impella|iabp|balloon pump",
        r"sternotomy wires|sternal wires|(?:surgical|orthopedic|spinal|fixation) hardware",
        r"tracheostomy|(?:closure|assist) devices?|(?:nerve|spinal|vagal) stimulator|(?:pulse |pacemaker |cardiac )?generator",
        r"prosthetic (?:aortic |mitral |pulmonic |tricuspid )?valve|vp shunt|shunt (?:tubing|catheter)",
        r"tip (?:\S+ ){0,4}?(?:svc|superior vena cava|(?:right )?atrium|cavoatrial|caval[- ]atrial|carina)",
    ),
}

# Attribute phrases: they count only with a qualifier in the same clause ("heart size is normal").
ATTRIBUTE_PHRASES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        r"heart(?: size)?",
        r"cardiac (?:silhouette|size|contours?|shadow|diameter)",
        r"size of the (?:heart|cardiac silhouette)",
    ),
    "Enlarged Cardiomediastinum": (
        r"(?:cardio)?mediastin(?:um|al (?:silhouettes?|contours?|structures?|width|shadow))",
        r"cardiomediastinal (?:silhouettes?|contours?|structures?|shadow|size)",
        r"heart and mediastinum",
    ),
}
ABNORMAL_QUALIFIER = r"enlarg\w*|large|increased|prominen\w*|widen\w*|wide|dilated|big"
BORDERLINE_QUALIFIER = r"borderline|top(?:[- ]of[- ])?[- ]?normal|upper (?:limits? )?(?:of )?normal|high[- ]normal|at the upper limits?"
NORMAL_QUALIFIER = r"normal|unremarkable|within normal limits|within limits of normal|wnl|not enlarged|not widened|is small|are small"

# Cues. "no" is not a negation in "no change in", "no increase in", ... (the finding persists).
_PERSISTS = r"(?:interval |significant |substantial |appreciable |definite )?(?:change|increase|progression|worsening|difference)"
NEGATION_PRE = (
    rf"\bno\b(?!\s+{_PERSISTS})(?!\s+longer)",
    r"\bnot\b(?! only)(?! changed)",
    rf"\bwithout\b(?!\s+{_PERSISTS})",
    r"\bnegative for\b",
    r"\bfree of\b",
    r"\bclear of\b",
    r"\babsen(?:ce|t) of\b",
    r"\b(?:interval |complete )?resolution of\b",
    r"\bresolved\b",
    r"\bremoval of\b",
    r"\bnor\b",
    r"\bnone\b",
    r"\bn't\b",
)
NEGATION_POST = (
    r"^[^,]{0,40}?\b(?:is|are|was|were|has|have|had)?\s*(?:not|no longer|n't)\s+(?:been\s+|be\s+)?(?:seen|identified|present|appreciated|visuali[sz]ed|demonstrated|evident|noted|detected|visible|observed|apparent|shown|enlarged|widened)\b",
    r"^[^,]{0,40}?\b(?:has|have|had)?\s*(?:been\s+)?(?:completely\s+|nearly\s+|now\s+|since\s+)?(?:resolved|cleared|removed|withdrawn|disappeared)\b",
    r"^[^,]{0,30}?\b(?:is|are|was|were)\s+(?:now\s+)?(?:absent|gone|negative|excluded|ruled out)\b",
    r"^[^,]{0,20}?\bno longer\b",
    r"^[^,]{0,40}?\b(?:is|are|was|were|appears?|remains?)\s+(?:normal|within (?:normal limits|limits of normal))\b",
)
# Negations that are really uncertainty ("cannot exclude X", "X is not excluded"): checked first.
NEGATED_UNCERTAINTY_PRE = (
    r"\b(?:cannot|can ?not|can't|could not|couldn't|not) (?:be )?(?:entirely |completely |totally |definitely )?(?:exclude[sd]?|ruled? out)\b",
    r"\b(?:difficult|hard|impossible) to (?:exclude|rule out)\b",
    r"\bnot (?:entirely |completely )?(?:clear|certain|sure)\b",
    r"\bcannot be (?:assessed|evaluated)\b",
)
NEGATED_UNCERTAINTY_POST = (
    r"^[^,]{0,40}?\b(?:cannot|can ?not|can't|could not|is not|are not|not) (?:be )?(?:entirely |completely |totally |definitely )?(?:exclude[sd]?|ruled? out)\b",
    r"^[^,]{0,40}?\bnot (?:entirely |completely )?(?:clear|certain|sure)\b",
)
UNCERTAINTY_PRE = (
    r"\bpossib(?:le|ly|ility)\b",
    r"\bprobabl[ey]\b",
    r"\blikely\b",
    r"\bmay\b",
    r"\bmight\b",
    r"\bcould\b",
    r"\bperhaps\b",
    r"\bsuggest\w*\b",
    r"\bsuspic\w*\b",
    r"\bsuspect\w*\b",
    r"\bconcern(?:ing)? (?:for|of)\b",
    r"\bworrisome for\b",
    r"\bquestion(?:able|ably|ed)?\b",
    r"\?",
    r"\bequivocal\b",
    r"\bindeterminate\b",
    r"\bborderline\b",
    r"\bvs\.?(?=\s)|\bversus\b",
    r"\bdifferential\b",
    r"\bconsider(?:ed|ation)?\b",
    r"\b(?:rule out|r/o)\b",
    r"\bpresum\w*\b",
    r"\b(?:or|and/or)\s+(?:\w+\s+){0,2}$",
)
UNCERTAINTY_POST = (
    r"^[^,]{0,30}?\b(?:is|are|was|were|be)?\s*(?:possible|possibly|likely|probable|suspected|questioned|questionable|not excluded|a consideration|considered|in question)\b",
    r"^\s*\?",
    r"^[^,]{0,20}?\b(?:vs\.?(?=\s)|versus)\b",
    r"^\s+(?:or|and/or)\s+(?!no\b)",
)
# Words between a cue and its mention that end the cue's scope ("no effusion in the setting of cardiomegaly").
SCOPE_STOPPERS = r"\b(?:given|in the setting of|in setting of|status post|s/p|due to|secondary to|related to|because|since|which|that|who|with (?:known|stable|unchanged|chronic|persistent|mild|moderate|severe|small|large)|of known)\b"
# Clause boundaries: cues never cross them.
CLAUSE_BOUNDARY = re.compile(
    r";|:\s|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b|\bwhile\b|\bexcept\b|\bapart from\b|\baside from\b"
    r"|,\s*(?=(?:and |or )?(?:the|there|this|these|it|a|an|which|given|no change)\b)"
    r"|\band\s+(?=(?:the|there|this|these|it|a|an|is|are|was|were)\b)"
)
SENTENCE_BOUNDARY = re.compile(r"(?<!\d)\.(?!\d)|!|\n+")


def _alternation(fragments: Iterable[str]) -> str:
    return "|".join(f"(?:{f})" for f in fragments)


def _word_pattern(fragments: Iterable[str]) -> re.Pattern:
    return re.compile(rf"(?<![\w-])(?:{_alternation(fragments)})(?![\w])")


@dataclass(frozen=True)
class _Patterns:
    findings: tuple[tuple[int, re.Pattern], ...]
    attributes: tuple[tuple[int, re.Pattern], ...]
    any_mention: re.Pattern
    abnormal: re.Pattern
    borderline: re.Pattern
    normal: re.Pattern
    negation_pre: re.Pattern
    negation_post: re.Pattern
    negated_uncertainty_pre: re.Pattern
    negated_uncertainty_post: re.Pattern
    uncertainty_pre: re.Pattern
    uncertainty_post: re.Pattern
    stoppers: re.Pattern


def _compile() -> _Patterns:
    every = [f for fr in FINDING_PHRASES.values() for f in fr] + [f for fr in ATTRIBUTE_PHRASES.values() for f in fr]
    return _Patterns(
        findings=tuple((LABEL_INDEX[name], _word_pattern(fr)) for name, fr in FINDING_PHRASES.items()),
        attributes=tuple((LABEL_INDEX[name], _word_pattern(fr)) for name, fr in ATTRIBUTE_PHRASES.items()),
        any_mention=_word_pattern(every),
        abnormal=re.compile(rf"\b(?:{ABNORMAL_QUALIFIER})\b"),
        borderline=re.compile(rf"\b(?:{BORDERLINE_QUALIFIER})\b"),
        normal=re.compile(rf"\b(?:{NORMAL_QUALIFIER})\b"),
        negation_pre=re.compile(_alternation(NEGATION_PRE)),
        negation_post=re.compile(_alternation(NEGATION_POST)),
        negated_uncertainty_pre=re.compile(_alternation(NEGATED_UNCERTAINTY_PRE)),
        negated_uncertainty_post=re.compile(_alternation(NEGATED_UNCERTAINTY_POST)),
        uncertainty_pre=re.compile(_alternation(UNCERTAINTY_PRE)),
        uncertainty_post=re.compile(_alternation(UNCERTAINTY_POST)),
        stoppers=re.compile(SCOPE_STOPPERS),
    )


PATTERNS = _compile()
ABNORMAL = "abnormal"
QUALIFIERS = ((ABNORMAL, PATTERNS.abnormal), (UNCERTAIN, PATTERNS.borderline), (NEGATIVE, PATTERNS.normal))


def normalise(text: str) -> str:
    """Lower-case, unify whitespace and question marks so cues match ('pneumonia?' → 'pneumonia ?')."""
    text = text.replace("\r", "\n").replace("?", " ? ")
    return re.sub(r"[ \t]+", " ", text).lower()


def split_clauses(text: str) -> list[str]:
    """Sentences of a normalised report, each cut at clause boundaries (cue scopes end there)."""
    clauses = []
    for sentence in SENTENCE_BOUNDARY.split(text):
        clauses.extend(c.strip() for c in CLAUSE_BOUNDARY.split(sentence))
    return [c for c in clauses if c]


def _pre_scope(clause: str, start: int) -> str:
    """The clause text before a mention, from the last scope stopper on."""
    before = clause[:start]
    last = None
    for last in PATTERNS.stoppers.finditer(before):  # noqa: B007  (the last match is what is kept)
        pass
    return before[last.end():] if last else before


def classify_mention(clause: str, start: int, end: int) -> float:
    """1 / 0 / -1 for the mention at ``clause[start:end]``, in CheXpert's order of rules."""
    pre, post = _pre_scope(clause, start), clause[end:]
    if PATTERNS.negated_uncertainty_pre.search(pre) or PATTERNS.negated_uncertainty_post.search(post):
        return UNCERTAIN
    if PATTERNS.negation_pre.search(pre) or PATTERNS.negation_post.search(post):
        return NEGATIVE
    if PATTERNS.uncertainty_pre.search(pre) or PATTERNS.uncertainty_post.search(post):
        return UNCERTAIN
    return POSITIVE


def _qualify_attribute(clause: str, start: int, end: int) -> float | None:
    """Value of an attribute mention from its nearest qualifier (just before it, else the first after it); None if unqualified.

    "normal" → negative, "borderline" → uncertain, "enlarged" → classified like a finding
    mention at the qualifier, so "heart is not enlarged" is negative and "possibly
    enlarged" uncertain.
    """
    lo = max(0, start - 25)
    for window_start, window_end, pick in ((lo, start, max), (end, len(clause), min)):
        window = clause[window_start:window_end]
        found = [(m.start() + window_start, m.end() + window_start, kind) for kind, pattern in QUALIFIERS for m in pattern.finditer(window)]
        if not found:
            continue
        q_start, q_end, kind = pick(found, key=lambda f: f[0])
        if kind == ABNORMAL:
            return classify_mention(clause, q_start, max(q_end, end))
        return kind
    return None


def _combine(current: float, new: float) -> float:
    """CheXpert aggregation: positive beats uncertain beats negative beats blank."""
    rank = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    if np.isnan(current) or rank[new] > rank[current]:
        return new
    return current


def label_report(text: str) -> np.ndarray:
    """(14,) float32 label vector of one report (NaN = not mentioned); an empty report is all blank."""
    labels = np.full(NUM_LABELS, np.nan, dtype=np.float32)
    if not isinstance(text, str) or not text.strip():
        return labels
    for clause in split_clauses(normalise(text)):
        if not PATTERNS.any_mention.search(clause):
            continue
        for index, pattern in PATTERNS.findings:
            for m in pattern.finditer(clause):
                labels[index] = _combine(labels[index], classify_mention(clause, m.start(), m.end()))
        for index, pattern in PATTERNS.attributes:
            for m in pattern.finditer(clause):
                value = _qualify_attribute(clause, m.start(), m.end())
                if value is not None:
                    labels[index] = _combine(labels[index], value)
    others = np.delete(labels, [NO_FINDING, SUPPORT_DEVICES])
    if not np.any((others == POSITIVE) | (others == UNCERTAIN)):
        labels[NO_FINDING] = POSITIVE
    return labels


def label_reports(texts: Sequence[str], backend: str = "rules", progress: bool = False, **chexbert_kwargs) -> np.ndarray:
    """(N, 14) float32 labels of N reports; ``backend`` is ``rules`` (this module) or ``chexbert``."""
    if backend == "chexbert":
        from cxr_irgen.text.chexbert import CheXbertLabeler

        return CheXbertLabeler.from_checkpoint(**chexbert_kwargs).label(texts, progress=progress)
    if backend != "rules":
        raise UserError(f"labeler={backend!r}: use rules or chexbert")
    from cxr_irgen.utils.progress import progress_bar

    rows = [label_report(t) for t in progress_bar(texts, desc="label reports", disable=not progress, dynamic_ncols=True)]
    return np.stack(rows) if rows else np.zeros((0, NUM_LABELS), dtype=np.float32)


def labeler_name(labeler_cfg) -> str:
    """How outputs name the labeler variant, e.g. ``rules`` or ``chexbert:/path/chexbert.pth``."""
    name = str(labeler_cfg.name)
    return name if name == "rules" else f"{name}:{labeler_cfg.checkpoint}"


def labeler_kwargs(labeler_cfg) -> dict:
    """Keyword arguments of :func:`label_reports` for a ``labeler`` config group entry."""
    if labeler_cfg.name == "chexbert":
        return {"backend": "chexbert", "checkpoint": labeler_cfg.checkpoint, "bert_dir": labeler_cfg.get("bert_dir"), "batch_size": int(labeler_cfg.get("batch_size", 32))}
    return {"backend": str(labeler_cfg.name)}


def run(cfg) -> None:
    """`cxr-irgen label-reports input=FILE.csv output=OUT.csv text_column=report`."""
    import pandas as pd

    from cxr_irgen.utils.rundir import run_dir

    if not cfg.input:
        raise UserError("label-reports needs input=FILE.csv (a CSV with a free-text report column)")
    source = Path(str(cfg.input))
    if not source.is_file():
        raise UserError(f"input={source}: no such file")
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"input={source} is not a readable CSV: {str(err).splitlines()[0]}") from None
    column = str(cfg.text_column)
    if column not in table.columns:
        raise UserError(f"text_column={column!r} is not in {source}; available columns: {', '.join(map(str, table.columns))}")
    labels = label_reports(table[column].tolist(), progress=True, **labeler_kwargs(cfg.labeler))
    for i, name in enumerate(CHEXPERT_LABELS):
        table[name] = labels[:, i]
    output = Path(str(cfg.output)) if cfg.output else run_dir(cfg) / "labels.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index=False)
    log.info("labelled %d reports with %s → %s", len(table), labeler_name(cfg.labeler), output)
    print(f"labelled {len(table)} reports → {output}")
