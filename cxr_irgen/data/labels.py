"""CheXpert labels: canonical order, user label strings, prompts and their inverse.

A label vector is a float32 array of shape (14,) in CheXpert's canonical order with
1.0 positive, 0.0 negative, -1.0 uncertain and NaN for "not mentioned".
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np

from cxr_irgen.errors import UserError

CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_LABELS = len(CHEXPERT_LABELS)
LABEL_INDEX = {name: i for i, name in enumerate(CHEXPERT_LABELS)}
TOP5_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


ALIASES: dict[str, str] = {_norm(n): n for n in CHEXPERT_LABELS}
ALIASES.update(
    {
        _norm(alias): name
        for alias, name in {
            "effusion": "Pleural Effusion",
            "normal": "No Finding",
            "no findings": "No Finding",
            "opacity": "Lung Opacity",
            "lesion": "Lung Lesion",
            "nodule": "Lung Lesion",
            "mass": "Lung Lesion",
            "enlarged cardiac silhouette": "Cardiomegaly",
            "widened mediastinum": "Enlarged Cardiomediastinum",
            "support device": "Support Devices",
            "devices": "Support Devices",
            "pneumothoraces": "Pneumothorax",
        }.items()
    }
)

_VALUE_NAMES = {1.0: "1", 0.0: "0", -1.0: "-1"}


def canonical_name(name: str) -> str:
    """Map a user-written observation name (any case/spacing, common aliases) to its canonical name."""
    key = _norm(name)
    if key not in ALIASES:
        raise UserError(f"unknown label {name!r}; valid labels: {', '.join(CHEXPERT_LABELS)} (aliases: effusion, opacity, lesion, normal, ...)")
    return ALIASES[key]


def empty_labels() -> np.ndarray:
    """A (14,) vector with every observation unmentioned (NaN)."""
    return np.full(NUM_LABELS, np.nan, dtype=np.float32)


def parse_value(text: str | float, name: str = "label") -> float:
    """Parse one label value: 1, 0 or -1 (also 1.0, +1, -1.0)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if value not in _VALUE_NAMES:
        raise UserError(f"bad value {text!r} for {name}: use 1 (positive), 0 (negative) or -1 (uncertain)")
    return value


def parse_labels(text: str | Mapping[str, float]) -> np.ndarray:
    """Parse ``"Cardiomegaly=1, Pleural Effusion=-1, Edema=0"`` (or a dict) to a (14,) vector.

    A bare name means positive. Unknown names and values other than 1/0/-1 raise UserError.
    """
    vec = empty_labels()
    items = text.items() if isinstance(text, Mapping) else _split_items(text)
    for name, value in items:
        canonical = canonical_name(name)
        vec[LABEL_INDEX[canonical]] = parse_value(value, canonical)
    return vec


def _split_items(text: str) -> Iterable[tuple[str, str]]:
    for part in re.split(r"[,;\n]", text):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            name, value = part.split("=", 1)
        elif ":" in part:
            name, value = part.split(":", 1)
        else:
            name, value = part, "1"
        yield name.strip(), value.strip()


def format_labels(vec: np.ndarray) -> str:
    """Inverse of :func:`parse_labels`: ``"Cardiomegaly=1, Edema=0"`` listing mentioned observations."""
    return ", ".join(f"{n}={_VALUE_NAMES[float(v)]}" for n, v in zip(CHEXPERT_LABELS, vec) if not np.isnan(v))


def label_key(vec: np.ndarray) -> str:
    """Hashable 14-character key of a full label vector: '1' pos, '0' neg, 'u' uncertain, '.' blank."""
    return "".join("." if np.isnan(v) else {1.0: "1", 0.0: "0", -1.0: "u"}[float(v)] for v in vec)


def positive_key(vec: np.ndarray) -> int:
    """Bit mask of the positive observations (bit i = observation i is 1.0)."""
    return int(sum(1 << i for i, v in enumerate(vec) if v == POSITIVE))


def labels_from_key(key: str) -> np.ndarray:
    """Inverse of :func:`label_key`."""
    return np.array([{"1": 1.0, "0": 0.0, "u": -1.0, ".": np.nan}[c] for c in key], dtype=np.float32)


PROMPT_PREFIX = "A chest X-Ray image"
_GROUP_WORDS = (("with", POSITIVE), ("without", NEGATIVE), ("unclear about", UNCERTAIN))


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def labels_to_prompt(vec: np.ndarray) -> str:
    """(14,) label vector → the CXR-IRGen prompt: 'A chest X-Ray image with P1, P2 and P3, without N1 and N2, and unclear about U1'.

    The paper's template "with ..., without ..., and unclear about ..." with empty groups dropped:
    each group keeps its own connector (``, without``; ``, and unclear about``), so two groups read
    'with cardiomegaly, without edema'. Names are lower-case, in canonical order.
    """
    parts = []
    for word, value in _GROUP_WORDS:
        names = [n.lower() for n, v in zip(CHEXPERT_LABELS, vec) if v == value]
        if names:
            connector = "" if not parts else (", and " if value == UNCERTAIN else ", ")
            parts.append(f"{connector}{word} {_join(names)}")
    return " ".join([PROMPT_PREFIX, "".join(parts)]) if parts else PROMPT_PREFIX


_GROUP_RE = re.compile(r"(?:^|, (?:and )?)(with|without|unclear about) ")
_LOWER_NAMES = {n.lower(): n for n in CHEXPERT_LABELS}


def prompt_to_labels(prompt: str) -> np.ndarray:
    """Parse a prompt made by :func:`labels_to_prompt` back to its (14,) label vector."""
    if not prompt.startswith(PROMPT_PREFIX):
        raise UserError(f"not a CXR-IRGen prompt (must start with {PROMPT_PREFIX!r}): {prompt!r}")
    body = prompt[len(PROMPT_PREFIX):].lstrip()
    vec = empty_labels()
    pieces = _GROUP_RE.split(body)
    if pieces[0].strip():
        raise UserError(f"cannot parse prompt near {pieces[0]!r}")
    values = dict(_GROUP_WORDS)
    for word, names in zip(pieces[1::2], pieces[2::2]):
        for name in re.split(r", | and ", names.strip()):
            if name not in _LOWER_NAMES:
                raise UserError(f"unknown observation {name!r} in prompt {prompt!r}")
            vec[LABEL_INDEX[_LOWER_NAMES[name]]] = values[word]
    return vec


def labels_from_row(row: Mapping[str, object]) -> np.ndarray:
    """(14,) vector from a table row holding the 14 CheXpert columns (missing or blank → NaN)."""
    vec = empty_labels()
    for i, name in enumerate(CHEXPERT_LABELS):
        value = row.get(name, np.nan)
        if value is not None and value == value and value != "":
            vec[i] = parse_value(value, name)
    return vec


def label_problems(text: str, where: str = "--labels") -> list[str]:
    """Every problem of one label string (nothing named, unknown name, bad value, an observation twice), not only the first."""
    parts = [p.strip() for p in re.split(r"[,;\n]", str(text)) if p.strip()]
    if not parts:
        return [f"{where} {str(text)!r} names no observation (e.g. \"Cardiomegaly=1, Edema=0\")"]
    problems, seen = [], {}
    for part in parts:
        try:
            vec = parse_labels(part)
        except UserError as err:
            problems.append(str(err).split("; valid labels")[0])
            continue
        name = CHEXPERT_LABELS[int(np.flatnonzero(~np.isnan(vec))[0])]
        if name in seen:
            problems.append(f"{name} given twice ({seen[name]!r} and {part!r})")
        seen[name] = part
    if any(p.startswith("unknown label") for p in problems):
        problems.append(f"valid labels: {', '.join(CHEXPERT_LABELS)} (aliases: effusion, opacity, lesion, normal, ...)")
    return problems


def _one_vector(labels) -> bool:
    """Whether ``labels`` is one label vector (a string, a dict, a (14,) array or list of numbers), not a list of them."""
    if isinstance(labels, (str, Mapping)):
        return True
    if hasattr(labels, "ndim"):
        return labels.ndim == 1
    return isinstance(labels, (list, tuple)) and bool(labels) and all(isinstance(v, (int, float, np.number)) for v in labels)


def label_vectors(labels) -> np.ndarray:
    """(K, 14) float32 from label strings (``"Cardiomegaly=1, Edema=0"``), dicts, (14,) vectors, a (K, 14) array, or a list of these.

    Every problem of every entry is named in one UserError (strings as :func:`label_problems`; vectors of the wrong shape
    or with values other than 1, 0, -1, NaN).
    """
    entries = [labels] if _one_vector(labels) else list(labels)
    if not entries:
        raise UserError("no label vectors given (e.g. \"Cardiomegaly=1, Edema=0\")")
    vectors, problems = [], []
    for i, entry in enumerate(entries):
        where = f"labels[{i}]" if len(entries) > 1 else "labels"
        if isinstance(entry, (str, Mapping)):
            found = label_problems(entry, where) if isinstance(entry, str) else []
            try:
                vectors.append(None if found else parse_labels(entry))
            except UserError as err:
                found = [str(err)]
            message = "; ".join(found)
            problems += [message if message.startswith(where) else f"{where} {entry!r}: {message}"] if found else []
            continue
        vec = np.asarray(entry, dtype=np.float32)
        if vec.shape != (NUM_LABELS,):
            problems.append(f"{where}: shape {vec.shape}, need ({NUM_LABELS},) in CheXpert order ({', '.join(CHEXPERT_LABELS)})")
        elif bad := sorted({float(v) for v in vec if not (np.isnan(v) or float(v) in _VALUE_NAMES)}):
            problems.append(f"{where}: values {bad} are not 1 (positive), 0 (negative), -1 (uncertain) or NaN (not mentioned)")
        vectors.append(vec)
    if problems:
        raise UserError("; ".join(problems[:10]) + (f"; ... ({len(problems)} problems)" if len(problems) > 10 else ""))
    return np.stack(vectors)
