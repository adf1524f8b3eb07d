"""Free-text reports for phantom studies, in the style of MIMIC-CXR reports.

Every labelled observation is stated: positives and uncertain findings in FINDINGS and
IMPRESSION, negatives in FINDINGS (and in IMPRESSION when nothing is positive); blank
observations are not mentioned. Wording is drawn from several phrasings per observation,
and the section layout varies (FINDINGS + IMPRESSION, IMPRESSION only, a combined
``FINDINGS AND IMPRESSION:`` section, lower/mixed-case headers) to exercise section
extraction. Lines are wrapped and indented like the real files.
"""

from __future__ import annotations

import textwrap

import numpy as np

from cxr_irgen.data.labels import CHEXPERT_LABELS, NEGATIVE, POSITIVE, UNCERTAIN

SIDE_WORDS = {-1.0: "right", 1.0: "left"}

# {side} is filled with "right", "left" or "bilateral" where the phantom draws the sign on a side.
POSITIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "No Finding": ("The lungs are clear.", "The lungs are well expanded and clear.", "Normal chest radiograph."),
    "Enlarged Cardiomediastinum": (
        "The cardiomediastinal silhouette is enlarged.", "The mediastinum is widened.",
        "There is widening of the mediastinal contours.",
    ),
    "Cardiomegaly": (
        "The heart is enlarged.", "Moderate cardiomegaly is present.", "There is cardiomegaly.",
        "The cardiac silhouette is enlarged.",
    ),
    "Lung Opacity": (
        "There are patchy opacities in the {side} lung.", "Multifocal airspace opacities are noted.",
        "Hazy opacity is seen in the {side} lung.",
    ),
    "Lung Lesion": (
        "There is a {side} lung nodule.", "A rounded mass is seen in the {side} lung.",
        "A {side} pulmonary nodule is present.",
    ),
    "Edema": (
        "There is pulmonary edema.", "There is mild interstitial pulmonary edema.",
        "Findings are compatible with interstitial edema.",
    ),
    "Consolidation": (
        "There is consolidation in the {side} lower lobe.", "Dense {side} basilar consolidation is present.",
        "Focal consolidation is seen in the {side} lung.",
    ),
    "Pneumonia": (
        "Findings are consistent with {side} pneumonia.", "There is {side} lower lobe pneumonia.",
        "A {side} basilar pneumonia is present.",
    ),
    "Atelectasis": (
        "There is plate-like atelectasis at the {side} base.", "Bibasilar atelectasis is present.",
        "Linear atelectasis is seen in the {side} lower lung.",
    ),
    "Pneumothorax": (
        "There is a small {side} apical pneumothorax.", "A {side} pneumothorax is present.",
        "A {side} pleural line is seen consistent with pneumothorax.",
    ),
    "Pleural Effusion": (
        "There is a {side} pleural effusion.", "A small {side} pleural effusion is present.",
        "Blunting of the {side} costophrenic angle is consistent with pleural effusion.",
    ),
    "Pleural Other": (
        "There is {side} pleural thickening.", "Lobulated {side} pleural thickening is noted.",
        "Pleural thickening is seen along the {side} chest wall.",
    ),
    "Fracture": (
        "There is a displaced {side} rib fracture.", "A {side} rib fracture is noted.",
        "Fracture of a {side} posterior rib is seen.",
    ),
    "Support Devices": (
        "Support devices are in standard position.", "A central venous catheter terminates in the SVC.",
        "Lines and tubes are in place.", "An endotracheal tube and enteric tube are in place.",
    ),
}
NEGATIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "The cardiomediastinal silhouette is normal.", "Mediastinal contours are within normal limits.",
        "No mediastinal widening.",
    ),
    "Cardiomegaly": ("Heart size is normal.", "No cardiomegaly.", "The heart is not enlarged."),
    "Lung Opacity": ("No focal opacity.", "There is no airspace opacity.", "The lungs are without opacity."),
    "Lung Lesion": ("No pulmonary nodules or masses.", "There is no lung nodule.", "No mass is seen."),
    "Edema": ("No pulmonary edema.", "There is no edema.", "No evidence of pulmonary edema."),
    "Consolidation": ("No focal consolidation.", "There is no consolidation.", "No consolidation is seen."),
    "Pneumonia": ("No evidence of pneumonia.", "There is no pneumonia.", "No findings to suggest pneumonia."),
    "Atelectasis": ("No atelectasis.", "There is no atelectasis.", "No evidence of atelectasis."),
    "Pneumothorax": ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen."),
    "Pleural Effusion": ("No pleural effusion.", "There is no pleural effusion.", "No effusion is seen."),
    "Pleural Other": ("No pleural thickening.", "There is no pleural abnormality.",),
    "Fracture": ("No acute fracture.", "There is no rib fracture.", "No displaced fracture is seen."),
    "Support Devices": ("No support devices.", "There are no lines or tubes.",),
}
BILATERAL_EFFUSION = (
    "There are small bilateral pleural effusions.", "Bilateral pleural effusions are present.",
    "Blunting of both costophrenic angles is consistent with bilateral pleural effusions.",
)
UNCERTAIN_TEMPLATES = (
    "Possible {phrase}.", "{Phrase} cannot be excluded.", "Findings may represent {phrase}.",
    "Subtle changes could reflect {phrase}.", "Cannot exclude {phrase}.",
)
UNCERTAIN_PHRASES: dict[str, str] = {
    "No Finding": "a normal study",
    "Enlarged Cardiomediastinum": "mediastinal widening",
    "Cardiomegaly": "mild cardiomegaly",
    "Lung Opacity": "a {side} lung opacity",
    "Lung Lesion": "a {side} lung nodule",
    "Edema": "mild pulmonary edema",
    "Consolidation": "{side} basilar consolidation",
    "Pneumonia": "early {side} pneumonia",
    "Atelectasis": "{side} basilar atelectasis",
    "Pneumothorax": "a tiny {side} pneumothorax",
    "Pleural Effusion": "small {side} pleural effusion",
    "Pleural Other": "{side} pleural thickening",
    "Fracture": "a {side} rib fracture",
    "Support Devices": "a retained line fragment",
}
NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
)
INDICATIONS = (
    "___ year old with shortness of breath.", "Cough and fever, evaluate for pneumonia.",
    "___F with chest pain.", "___M s/p line placement, evaluate position.", "Hypoxia.",
    "History: ___ with dyspnea on exertion.", "Evaluate for interval change.",
)
EXAMINATIONS = {
    "PA": ("CHEST (PA AND LAT)", "Chest PA and lateral"),
    "AP": ("CHEST (PORTABLE AP)", "Portable AP chest radiograph"),
}
VIEW_OPENERS = {
    "PA": ("PA and lateral views of the chest provided.", "Frontal and lateral views of the chest were obtained."),
    "AP": ("Portable semi-upright AP view of the chest.", "Single portable view of the chest."),
}
LAYOUTS = ("findings+impression",) * 6 + ("impression only", "combined", "lower-case headers")


def report_sides(params: dict) -> dict[str, str]:
    """The side word ('right', 'left', 'bilateral') of each lateralised sign of a phantom (see phantom_render)."""
    effusion = params["effusion_sides"]
    return {
        "Pleural Effusion": "bilateral" if len(effusion) == 2 else SIDE_WORDS[effusion[0]],
        "Lung Opacity": SIDE_WORDS[params["opacity_patches"][0][0]],
        "Consolidation": SIDE_WORDS[params["consolidation"][0]],
        "Pneumonia": SIDE_WORDS[params["pneumonia"][0]],
        "Lung Lesion": SIDE_WORDS[params["lesion"][0]],
        "Atelectasis": SIDE_WORDS[params["atelectasis"][0]],
        "Pneumothorax": SIDE_WORDS[params["pneumothorax"][0]],
        "Pleural Other": SIDE_WORDS[params["pleural_other"][0]],
        "Fracture": SIDE_WORDS[params["fracture"][0]],
    }


def _phrase(rng: np.random.Generator, options: tuple[str, ...], side: str) -> str:
    return options[int(rng.integers(len(options)))].format(side=side)


def _uncertain(rng: np.random.Generator, name: str, side: str) -> str:
    phrase = UNCERTAIN_PHRASES[name].format(side=side)
    template = UNCERTAIN_TEMPLATES[int(rng.integers(len(UNCERTAIN_TEMPLATES)))]
    return template.format(phrase=phrase, Phrase=phrase[0].upper() + phrase[1:])


def _paragraph(sentences: list[str]) -> list[str]:
    return textwrap.wrap("  ".join(sentences), width=76, break_on_hyphens=False)


def _statements(labels: np.ndarray, sides: dict[str, str], rng: np.random.Generator) -> list[str]:
    """One sentence per labelled observation: positives, then uncertain, then negatives in random order."""
    positives, uncertain, negatives = [], [], []
    for name, value in zip(CHEXPERT_LABELS, labels):
        side = sides.get(name, "")
        if value == POSITIVE:
            options = BILATERAL_EFFUSION if side == "bilateral" else POSITIVE_PHRASES[name]
            positives.append(_phrase(rng, options, side))
        elif value == UNCERTAIN:
            uncertain.append(_uncertain(rng, name, side))
        elif value == NEGATIVE and name != "No Finding":
            negatives.append(_phrase(rng, NEGATIVE_PHRASES[name], side))
    return positives + uncertain + [negatives[i] for i in rng.permutation(len(negatives))]


def write_report(labels: np.ndarray, view: str, sides: dict[str, str], rng: np.random.Generator) -> str:
    """One study's report text for its (14,) label vector; ``view`` is the frontal view ('PA' or 'AP').

    FINDINGS and IMPRESSION each state every labelled observation (worded independently), as
    MIMIC's labels come from the impression (or the findings when it is missing); a normal
    study's impression opens with a phrase like "No acute cardiopulmonary process.".
    """
    findings = [_phrase(rng, VIEW_OPENERS[view], ""), *_statements(labels, sides, rng)]
    impression = _statements(labels, sides, rng)
    if labels[0] == POSITIVE:
        impression = [_phrase(rng, NORMAL_IMPRESSIONS, ""), *impression[1:]]
    impression = impression or [_phrase(rng, NORMAL_IMPRESSIONS, "")]
    layout = LAYOUTS[int(rng.integers(len(LAYOUTS)))]
    exam, technique = EXAMINATIONS[view]
    header = [
        " " * 33 + "FINAL REPORT",
        f" EXAMINATION:  {exam}",
        " ",
        f" INDICATION:  {_phrase(rng, INDICATIONS, '')}",
        " ",
        f" TECHNIQUE:  {technique}",
        " ",
        f" COMPARISON:  {'None.' if rng.random() < 0.6 else 'Chest radiograph from ___.'}",
        " ",
    ]
    sections: list[tuple[str, list[str]]]
    if layout == "impression only":
        sections = [("IMPRESSION:", impression)]
    elif layout == "combined":
        sections = [("FINDINGS AND IMPRESSION:", findings)]
    elif layout == "lower-case headers":
        sections = [("Findings:", findings), ("Impression:", impression)]
    else:
        sections = [("FINDINGS:", findings), ("IMPRESSION:", impression)]
    lines = list(header)
    for title, sentences in sections:
        lines += [f" {title} ", " "]
        lines += [" " + line for line in _paragraph(sentences)]
        lines.append(" ")
    return "\n".join(lines) + "\n"
