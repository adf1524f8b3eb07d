"""Procedural chest radiograph phantoms: anatomy plus label-driven signs, drawn with numpy.

A phantom is described by :func:`sample_phantom` (a plain dict of numbers drawn from a
seeded generator: anatomy, view geometry and the placement of every possible sign) and
drawn by :func:`render_phantom` for a label vector. All random draws happen in
:func:`sample_phantom` whatever the labels, so the same parameters rendered with and
without a label differ only by that label's sign.

Drawing works in *attenuation*: soft tissue, bone, fluid and devices add to a map ``A``
and air (lungs, trachea, stomach bubble) subtracts; the film value is ``1 - exp(-k A)``
(bright = dense), as in a radiograph. Geometry lives in patient coordinates ``(u, v)`` in
[0, 1] (``u`` to the image right = the patient's left, ``v`` downwards) so every size
renders the same picture. Side ``+1`` is the patient's left (image right), ``-1`` the right.

Signs (positive = drawn at full strength; uncertain = drawn faintly, in about half of the
phantoms; negative or blank = absent):

- Cardiomegaly: heart width up (cardiothoracic ratio ~0.58-0.66 instead of ~0.40-0.48).
- Enlarged Cardiomediastinum: upper mediastinum widened.
- Pleural Effusion: fluid in one or both costophrenic angles with a meniscus (blunted angle).
- Lung Opacity / Consolidation / Pneumonia: patchy opacities (faint multifocal / dense lobar
  with air bronchograms / patchy lower-zone cluster).
- Edema: bilateral perihilar haze with septal lines at the bases.
- Pneumothorax: lucent lateral-apical rim without lung markings behind a thin pleural line.
- Atelectasis: plate-like band at a base and an elevated hemidiaphragm (volume loss).
- Support Devices: bright thin tubes and lines (endotracheal, nasogastric, central line, leads).
- Lung Lesion: a round nodule. Fracture: a displaced rib discontinuity.
- Pleural Other: lobulated pleural thickening along a lateral chest wall.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cxr_irgen.data.labels import LABEL_INDEX, POSITIVE, UNCERTAIN

VIEWS = ("PA", "AP", "LATERAL")
SIGNS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
UNCERTAIN_STRENGTH = 0.45


def sign_strengths(labels: np.ndarray, params: dict) -> dict[str, float]:
    """How strongly each sign is drawn: 1 for positive, faint for uncertain (when its coin says so), else 0."""
    strengths = {}
    for name in SIGNS:
        value = labels[LABEL_INDEX[name]]
        if value == POSITIVE:
            strengths[name] = 1.0
        elif value == UNCERTAIN and params["uncertain_shown"][name]:
            strengths[name] = UNCERTAIN_STRENGTH
        else:
            strengths[name] = 0.0
    return strengths


# ----------------------------------------------------------------------------- parameters


def sample_phantom(rng: np.random.Generator, view: str) -> dict:
    """All random numbers of one phantom (anatomy, exposure and every sign's placement) as a dict."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    U = rng.uniform
    side = lambda: float(rng.choice((-1.0, 1.0)))  # noqa: E731
    ap = view == "AP"
    p = {
        "view": view,
        # global pose and exposure
        "scale": U(0.93, 1.03), "shift": (U(-0.025, 0.025), U(-0.02, 0.03)), "rotation": U(-3.0, 3.0),
        "contrast": U(1.5, 1.9), "gamma": U(0.85, 1.15), "noise": U(0.008, 0.02),
        "gradient": (U(-0.06, 0.06), U(-0.04, 0.06)), "blur": U(0.0025, 0.004) * (1.8 if ap else 1.0),
        "noise_seed": int(rng.integers(2**31)),
        # anatomy
        "mediastinum": U(0.055, 0.07), "lung_half_width": U(0.15, 0.17), "apex": U(0.1, 0.14) + (0.02 if ap else 0.0),
        "base": U(0.77, 0.81) - (0.04 if ap else 0.0), "dome": U(0.06, 0.09), "left_drop": U(0.01, 0.03),
        "heart_ratio": U(0.40, 0.48) * (1.1 if ap else 1.0), "heart_height": U(0.1, 0.125),
        "heart_tilt": U(10, 25), "clavicle_level": U(0.15, 0.19) - (0.05 if ap else 0.0),
        "clavicle_slope": U(0.12, 0.25) * (0.3 if ap else 1.0), "rib_count": U(9.0, 10.0), "rib_curve": U(0.45, 0.7),
        "vessels": [(s, U(-1.2, 1.2), U(0.12, 0.28), U(-0.5, 0.5)) for s in (-1.0, 1.0) for _ in range(9)],
        "breast": U(0.0, 0.12),
        # signs (always drawn, so labels do not change the random stream)
        "uncertain_shown": {name: bool(rng.random() < 0.5) for name in SIGNS},
        "cardiomegaly_ratio": U(0.58, 0.66) * (1.1 if ap else 1.0),
        "mediastinum_widening": U(0.035, 0.055),
        "effusion_sides": [(-1.0,), (1.0,), (-1.0, 1.0)][int(rng.integers(3))], "effusion_height": U(0.07, 0.16),
        "opacity_patches": [(side(), U(0.3, 0.7), U(0.3, 0.75), U(0.03, 0.06)) for _ in range(int(rng.integers(3, 6)))],
        "consolidation": (side(), U(0.35, 0.7), U(0.45, 0.7), U(0.06, 0.09)),
        "pneumonia": (side(), U(0.3, 0.7), U(0.55, 0.72)),
        "pneumonia_patches": [(U(-0.06, 0.06), U(-0.05, 0.05), U(0.015, 0.03)) for _ in range(7)],
        "lesion": (side(), U(0.3, 0.75), U(0.3, 0.65), U(0.018, 0.035)),
        "atelectasis": (side(), U(0.4, 0.7), U(-20, 20), U(0.012, 0.02)),
        "pneumothorax": (side(), U(0.04, 0.08)),
        "pleural_other": (side(), U(0.012, 0.025), U(0.3, 0.55)),
        "fracture": (side(), int(rng.integers(4, 8)), U(0.55, 0.8)),
        "devices": {
            "endotracheal": bool(rng.random() < 0.6), "nasogastric": bool(rng.random() < 0.5),
            "central_line": bool(rng.random() < 0.7), "leads": bool(rng.random() < 0.5),
            "line_side": side(), "tip": U(0.3, 0.4), "lead_spots": [(U(0.15, 0.85), U(0.1, 0.6)) for _ in range(3)],
        },
    }
    if not (p["devices"]["endotracheal"] or p["devices"]["nasogastric"] or p["devices"]["central_line"]):
        p["devices"]["central_line"] = True
    return p


# ----------------------------------------------------------------------------- canvas


class _Canvas:
    """Patient-coordinate grids ``u, v`` (H, W) and the attenuation map being drawn."""

    def __init__(self, size: int, params: dict):
        self.size = size
        self.px = 1.0 / size
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        x = (x + 0.5) / size - 0.5
        y = (y + 0.5) / size - 0.5
        angle = np.deg2rad(params["rotation"])
        c, s = np.cos(angle), np.sin(angle)
        self.u = ((c * x + s * y) / params["scale"] + 0.5 - params["shift"][0]).astype(np.float32)
        self.v = ((-s * x + c * y) / params["scale"] + 0.5 - params["shift"][1]).astype(np.float32)
        self.attenuation = np.zeros((size, size), np.float32)
        self.edge = max(0.004, 0.8 * self.px)

    def soft(self, distance: np.ndarray, width: float | None = None) -> np.ndarray:
        """Soft inside-mask from a signed distance (positive inside), edge width in patient units."""
        w = width or self.edge
        return 0.5 + 0.5 * np.tanh(distance / w)

    def ellipse(self, cx, cy, rx, ry, angle_deg=0.0, power=2.0) -> np.ndarray:
        a = np.deg2rad(angle_deg)
        du, dv = self.u - cx, self.v - cy
        x = (np.cos(a) * du + np.sin(a) * dv) / rx
        y = (-np.sin(a) * du + np.cos(a) * dv) / ry
        r = (np.abs(x) ** power + np.abs(y) ** power) ** (1.0 / power)
        return self.soft((1.0 - r) * min(rx, ry))

    def gaussian(self, cx, cy, sx, sy=None) -> np.ndarray:
        sy = sx if sy is None else sy
        return np.exp(-0.5 * (((self.u - cx) / sx) ** 2 + ((self.v - cy) / sy) ** 2))

    def polyline(self, points, width: float, value: float, taper: bool = False) -> None:
        """Add a bright (value > 0) or dark line through ``points`` [(u, v), ...] of ``width`` (patient units)."""
        width = max(width, 0.6 * self.px)
        pts = np.asarray(points, np.float32)
        for i, ((u0, v0), (u1, v1)) in enumerate(zip(pts[:-1], pts[1:])):
            w = width * (1.0 - 0.6 * i / max(1, len(pts) - 1)) if taper else width
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((self.u - u0) * du + (self.v - v0) * dv) / (du * du + dv * dv + 1e-12), 0.0, 1.0)
            d2 = (self.u - u0 - t * du) ** 2 + (self.v - v0 - t * dv) ** 2
            line = np.exp(-d2 / (2 * (0.5 * w) ** 2))
            self.attenuation += value * line


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean unit-ish noise with features of ``scale`` (fraction of the image), (size, size)."""
    coarse = max(4, int(round(1.0 / scale)))
    field = rng.standard_normal((coarse + 3, coarse + 3)).astype(np.float32)
    zoomed = ndimage.zoom(field, size / coarse, order=3, mode="nearest", grid_mode=True)
    return zoomed[:size, :size]


# ----------------------------------------------------------------------------- frontal anatomy


class _Frontal:
    """Geometry of a PA/AP chest: lungs, mediastinum, heart, domes, used by anatomy and signs alike."""

    def __init__(self, canvas: _Canvas, p: dict, strengths: dict[str, float]):
        self.c, self.p, self.strengths = canvas, p, strengths
        u, v = canvas.u, canvas.v
        thorax = 2 * (p["mediastinum"] + 2 * p["lung_half_width"])
        self.thorax = thorax
        ratio = p["heart_ratio"] + strengths["Cardiomegaly"] * (p["cardiomegaly_ratio"] - p["heart_ratio"])
        self.heart_rx = 0.5 * ratio * thorax
        widening = strengths["Enlarged Cardiomediastinum"] * p["mediastinum_widening"]
        upper = np.exp(-0.5 * ((v - 0.3) / 0.09) ** 2)
        self.mediastinum = p["mediastinum"] + (0.012 + widening) * upper  # (H, W) half-width
        atelectasis_side = p["atelectasis"][0]
        self.lungs, self.boundary, self.base = {}, {}, {}
        for s in (-1.0, 1.0):
            base = p["base"] + (p["left_drop"] if s > 0 else 0.0)
            if s == atelectasis_side:
                base -= 0.045 * strengths["Atelectasis"]
            self.base[s] = base
            w = p["lung_half_width"]
            xc = 0.5 + s * (p["mediastinum"] + w)
            mid = 0.5
            t = np.clip((mid - v) / (mid - p["apex"]), 0.0, 2.0)
            half = w * (1 + 0.12 * np.clip(v - 0.35, 0, None)) * np.sqrt(np.clip(1 - t**2, 0.0, None))
            d_lateral = np.where(t <= 1.0, half - np.abs(u - xc), -(v - p["apex"]) ** 2 - np.abs(u - xc) * 0.1 - 1e-3)
            dome_x = xc - s * 0.015
            dome_w = w + 0.03
            dome = base - p["dome"] * np.clip(1 - ((u - dome_x) / dome_w) ** 2, 0.0, None)
            d_dome = dome - v
            d_medial = s * (u - 0.5) - self.mediastinum
            distance = np.minimum(np.minimum(d_lateral, d_dome), d_medial)
            self.boundary[s] = (d_lateral, d_dome, distance)
            self.lungs[s] = canvas.soft(distance)
        self.lung = self.lungs[-1.0] + self.lungs[1.0]
        self.domes = {s: self.boundary[s][1] for s in (-1.0, 1.0)}

    def lung_point(self, s: float, across: float, down: float) -> tuple[float, float]:
        """A point inside lung ``s``: ``across`` 0 medial .. 1 lateral, ``down`` 0 apex .. 1 base."""
        p = self.p
        u = 0.5 + s * (p["mediastinum"] + 0.02 + across * (2 * p["lung_half_width"] - 0.04))
        v = p["apex"] + 0.05 + down * (self.base[s] - p["dome"] - p["apex"] - 0.03)
        return u, v


def _draw_frontal(c: _Canvas, p: dict, strengths: dict[str, float]) -> None:
    g = _Frontal(c, p, strengths)
    u, v, A = c.u, c.v, c.attenuation
    ap = p["view"] == "AP"
    # body: torso with shoulders, neck, arms
    torso = c.ellipse(0.5, 0.66, 0.46, 0.62, power=3.2)
    neck = c.ellipse(0.5, 0.0, 0.085, 0.2, power=2.5)
    arms = c.ellipse(0.015, 0.55, 0.05, 0.5, power=2.5) + c.ellipse(0.985, 0.55, 0.05, 0.5, power=2.5)
    body = np.clip(torso + neck + 0.8 * arms, 0.0, 1.0)
    A += 0.95 * body
    A += p["breast"] * (c.ellipse(0.3, 0.78, 0.15, 0.1) + c.ellipse(0.7, 0.78, 0.15, 0.1))
    # lungs: air
    lung = g.lung
    A -= 0.62 * lung
    # mediastinum (soft tissue already in the body) with spine and trachea
    spine = c.soft(0.028 - np.abs(u - 0.5)) * c.soft(v - 0.02)
    vertebrae = 0.6 + 0.4 * np.cos(2 * np.pi * v / 0.052) ** 2
    A += 0.22 * spine * vertebrae * (1 - 0.5 * lung)
    trachea = c.soft(0.014 - np.abs(u - 0.5 + 0.004 * (v - 0.1) / 0.2)) * c.soft(0.31 - v) * c.soft(v - 0.03)
    A -= 0.22 * trachea
    for s in (-1.0, 1.0):
        c.polyline([(0.5, 0.31), (0.5 + s * 0.045, 0.37 + 0.01 * s)], 0.02, -0.16)
    # heart (over lungs and mediastinum) with the aortic knob
    heart_cx = 0.5 + g.heart_rx * 0.36
    heart_cy = g.base[1.0] - p["dome"] - p["heart_height"] * 0.55
    heart = c.ellipse(heart_cx, heart_cy, g.heart_rx, p["heart_height"], angle_deg=-p["heart_tilt"] * 0.4, power=2.2)
    below_domes = c.soft(-np.maximum(g.domes[-1.0], g.domes[1.0]), 0.01)
    A += 0.6 * heart * (1 - below_domes) * np.clip(lung + 0.2, 0, 1)
    knob = c.ellipse(0.5 + 0.055 + 0.3 * (g.mediastinum.max() - p["mediastinum"]), 0.29, 0.035, 0.03)
    A += 0.45 * knob * lung
    # hila and vessels branching outward
    for s, angle, length, bend in p["vessels"]:
        hx, hy = 0.5 + s * (p["mediastinum"] + 0.035), 0.47
        direction = np.array([s * np.cos(angle), np.sin(angle)])
        turned = np.array([s * np.cos(angle + s * bend), np.sin(angle + s * bend)])
        mid = np.array([hx, hy]) + 0.5 * length * direction
        end = mid + 0.5 * length * turned
        c.polyline([(hx, hy), tuple(mid), tuple(end)], 0.012, 0.07, taper=True)
    A += 0.16 * (c.gaussian(0.5 - p["mediastinum"] - 0.03, 0.46, 0.03, 0.05) + c.gaussian(0.5 + p["mediastinum"] + 0.03, 0.44, 0.03, 0.05))
    # ribs: posterior arcs over the thorax, spacing widening downwards
    d = np.abs(u - 0.5)
    arc = v - p["rib_curve"] * (d - 0.12) ** 2 + 0.1 * d
    phase = np.clip((arc - p["apex"] + 0.04) / (g.base[-1.0] - p["apex"] + 0.02), 0.0, None) ** 0.8 * p["rib_count"]
    rib_side, rib_index, rib_at = p["fracture"]
    fracture = strengths["Fracture"]
    if fracture:
        side_ok = (u - 0.5) * rib_side > 0
        on_rib = np.abs(phase - rib_index - 0.3) < 0.8
        frac_u = 0.5 + rib_side * (p["mediastinum"] + rib_at * 2 * p["lung_half_width"])
        segment = (np.abs(u - frac_u - rib_side * 0.03) < 0.03) & side_ok & on_rib
        phase = np.where(segment, phase + 0.35 * fracture, phase)
    frac = phase - np.floor(phase)
    rib = np.exp(-0.5 * ((frac - 0.3) / 0.11) ** 2) + 0.4 * np.exp(-0.5 * ((frac - 0.3) / 0.05) ** 2)
    cage = c.soft(0.5 * g.thorax + 0.03 - d) * c.soft(phase - 0.2) * c.soft(p["rib_count"] + 0.4 - phase, 0.2)
    A += 0.2 * rib * cage * (0.5 + 0.5 * lung)
    # clavicles
    for s in (-1.0, 1.0):
        x = np.linspace(0.05, 0.3, 6)
        pts = [(0.5 + s * xi, p["clavicle_level"] - p["clavicle_slope"] * (xi - 0.05) + 0.03 * np.sin(xi * 12)) for xi in x]
        c.polyline(pts, 0.022, 0.3)
    if ap:  # scapulae overlap the upper lungs on an AP film
        for s in (-1.0, 1.0):
            A += 0.12 * c.ellipse(0.5 + s * 0.37, 0.3, 0.07, 0.16, angle_deg=s * 15) * lung
    # stomach bubble under the left dome
    A -= 0.2 * c.ellipse(0.5 + p["mediastinum"] + p["lung_half_width"] * 0.9, g.base[1.0] + 0.04, 0.05, 0.03)
    _draw_frontal_signs(c, g, p, strengths)


def _draw_frontal_signs(c: _Canvas, g: _Frontal, p: dict, st: dict[str, float]) -> None:
    u, v, A = c.u, c.v, c.attenuation
    rng = np.random.default_rng(p["noise_seed"] + 1)
    texture = 0.6 + 0.4 * np.clip(_smooth_noise(rng, c.size, 0.08) * 0.5 + 0.5, 0, 1)
    if st["Pleural Effusion"]:
        for s in p["effusion_sides"]:
            d_lateral, _, distance = g.boundary[s]
            lateral = np.clip(1 - d_lateral / (2 * p["lung_half_width"]), 0, 1)
            level = g.base[s] - p["effusion_height"] * (0.45 + 0.9 * lateral**2)
            fluid = g.lungs[s] * c.soft(v - level, 0.012)
            A += 0.62 * st["Pleural Effusion"] * fluid
    if st["Lung Opacity"]:
        for s, across, down, r in p["opacity_patches"]:
            cx, cy = g.lung_point(s, across, down)
            A += 0.2 * st["Lung Opacity"] * c.gaussian(cx, cy, r, r * 1.3) * texture * g.lung
    if st["Consolidation"]:
        s, across, down, r = p["consolidation"]
        cx, cy = g.lung_point(s, across, down)
        blob = c.ellipse(cx, cy, r * 1.3, r, power=2.0) * texture
        A += 0.42 * st["Consolidation"] * blob * g.lung
        for k in range(3):  # air bronchograms
            c.polyline([(cx - s * 0.03, cy - 0.02 + 0.015 * k), (cx + s * 0.04, cy + 0.01 + 0.02 * k)], 0.006, -0.12 * st["Consolidation"])
    if st["Pneumonia"]:
        s, across, down = p["pneumonia"]
        cx, cy = g.lung_point(s, across, down)
        for du, dv, r in p["pneumonia_patches"]:
            A += 0.24 * st["Pneumonia"] * c.gaussian(cx + du, cy + dv, r) * g.lung
    if st["Edema"]:
        haze = sum(c.gaussian(0.5 + s * (p["mediastinum"] + 0.07), 0.5, 0.09, 0.13) for s in (-1.0, 1.0))
        A += 0.3 * st["Edema"] * haze * texture * g.lung
        for s in (-1.0, 1.0):  # Kerley B lines at the lateral bases
            edge = 0.5 + s * (p["mediastinum"] + 2 * p["lung_half_width"])
            for k in range(4):
                y = g.base[s] - 0.03 - 0.025 * k
                c.polyline([(edge, y), (edge - s * 0.035, y)], 0.004, 0.12 * st["Edema"])
    if st["Atelectasis"]:
        s, down, angle, thick = p["atelectasis"]
        cx, cy = g.lung_point(s, 0.5, down + 0.25)
        A += 0.45 * st["Atelectasis"] * c.ellipse(cx, cy, 0.1, thick, angle_deg=angle) * g.lung
    if st["Lung Lesion"]:
        s, across, down, r = p["lesion"]
        cx, cy = g.lung_point(s, across, down)
        A += 0.45 * st["Lung Lesion"] * c.ellipse(cx, cy, r, r)
    if st["Pleural Other"]:
        s, thick, top = p["pleural_other"]
        d_lateral = g.boundary[s][0]
        lobes = 1 + 0.5 * np.sin(v * 70)
        band = c.soft(thick * lobes - d_lateral, 0.004) * g.lungs[s] * c.soft(v - top, 0.02) * c.soft(top + 0.3 - v, 0.02)
        A += 0.45 * st["Pleural Other"] * band
    if st["Pneumothorax"]:
        s, gap = p["pneumothorax"]
        d_lateral, _, distance = g.boundary[s]
        rim_distance = np.minimum(d_lateral, distance + 0.2 * (v - p["apex"]))
        rim = g.lungs[s] * c.soft(gap - rim_distance, 0.004) * c.soft(g.base[s] - 0.12 - v, 0.03)
        markings = np.clip(A - _without_markings(c, g, p), 0, None)
        A -= st["Pneumothorax"] * (0.12 * rim + markings * rim)
        pleural_line = np.exp(-0.5 * ((rim_distance - gap) / max(0.003, 0.5 * c.px)) ** 2)
        A += 0.14 * st["Pneumothorax"] * pleural_line * g.lungs[s] * c.soft(g.base[s] - 0.12 - v, 0.03)
    if st["Support Devices"]:
        dev, s = p["devices"], p["devices"]["line_side"]
        strength = st["Support Devices"]
        if dev["endotracheal"]:
            c.polyline([(0.5, 0.0), (0.5, 0.1), (0.502, 0.26)], 0.007, 0.5 * strength)
        if dev["nasogastric"]:
            c.polyline([(0.49, 0.0), (0.485, 0.3), (0.5, 0.6), (0.52, g.base[1.0] + 0.02), (0.6, g.base[1.0] + 0.06)], 0.006, 0.45 * strength)
        if dev["central_line"]:
            start = (0.5 + s * 0.28, p["clavicle_level"] + 0.02)
            c.polyline([start, (0.5 + s * 0.12, p["clavicle_level"] + 0.05), (0.5 + s * 0.035, 0.26), (0.5 - 0.03, dev["tip"])], 0.005, 0.5 * strength)
        if dev["leads"]:
            for lu, lv in dev["lead_spots"]:
                ring = np.exp(-0.5 * ((np.hypot(u - lu, v - lv) - 0.014) / 0.004) ** 2)
                A += 0.45 * strength * ring
                c.polyline([(lu, lv), (lu + 0.1, lv - 0.15), (lu + 0.15, 0.0)], 0.004, 0.3 * strength)


def _without_markings(c: _Canvas, g: _Frontal, p: dict) -> np.ndarray:
    """The local background level under lung markings: a heavy blur of the attenuation so far."""
    return ndimage.uniform_filter(c.attenuation, size=max(3, c.size // 24))


# ----------------------------------------------------------------------------- lateral anatomy


def _draw_lateral(c: _Canvas, p: dict, st: dict[str, float]) -> None:
    """Lateral view, patient facing the image left: sternum anterior, spine posterior, one lung field."""
    u, v, A = c.u, c.v, c.attenuation
    body = np.clip(c.ellipse(0.5, 0.62, 0.43, 0.6, power=2.6) + c.ellipse(0.52, 0.05, 0.14, 0.2), 0, 1)
    A += 1.05 * body
    for dx in (0.0, 0.05):  # raised arms over the upper chest
        A += 0.3 * c.ellipse(0.34 + dx, 0.12, 0.05, 0.2, angle_deg=35)
    base = p["base"] + 0.02
    dome = base - 0.12 * np.clip(1 - ((u - 0.45) / 0.36) ** 2, 0, None) + 0.06 * np.clip(u - 0.5, 0, None)
    lung = c.ellipse(0.53, 0.5, 0.3, 0.42, power=2.4) * c.soft(dome - v)
    A -= 0.7 * lung
    ratio = p["heart_ratio"] + st["Cardiomegaly"] * (p["cardiomegaly_ratio"] - p["heart_ratio"])
    heart_r = 0.32 * ratio
    heart = c.ellipse(0.34 + 0.25 * heart_r, dome.min() + 0.52 - 0.2, heart_r, 0.12 + 0.2 * heart_r, angle_deg=-30)
    A += 0.55 * heart * lung
    spine_u = 0.8
    vertebrae = c.soft(0.045 - np.abs(u - spine_u - 0.04 * (v - 0.5))) * (0.6 + 0.4 * (np.cos(np.pi * v / 0.045) ** 2 > 0.15))
    A += 0.3 * vertebrae
    A += 0.25 * c.soft(0.008 - np.abs(u - 0.17 - 0.08 * (v - 0.3))) * c.soft(v - 0.2) * c.soft(0.7 - v)
    A -= 0.18 * c.soft(0.013 - np.abs(u - 0.55 - 0.1 * (v - 0.1))) * c.soft(0.36 - v)
    A += 0.2 * c.gaussian(0.55, 0.45, 0.05, 0.06)
    for k in range(9):  # faint oblique ribs
        y = 0.18 + 0.065 * k
        c.polyline([(0.2, y - 0.05), (0.5, y + 0.02), (0.8, y + 0.08)], 0.012, 0.05)
    rng = np.random.default_rng(p["noise_seed"] + 1)
    texture = 0.6 + 0.4 * np.clip(_smooth_noise(rng, c.size, 0.08) * 0.5 + 0.5, 0, 1)
    if st["Pleural Effusion"]:  # posterior costophrenic sulcus fills
        level = base - p["effusion_height"] * (0.3 + 1.2 * np.clip((u - 0.45) / 0.35, 0, 1) ** 2)
        A += 0.6 * st["Pleural Effusion"] * lung * c.soft(v - level, 0.012)
    for name, strength in (("Lung Opacity", 0.2), ("Consolidation", 0.4), ("Pneumonia", 0.3), ("Edema", 0.25)):
        if st[name]:
            cy = 0.55 if name != "Edema" else 0.45
            A += strength * st[name] * c.gaussian(0.55, cy, 0.09, 0.08) * texture * lung
    if st["Atelectasis"]:
        A += 0.35 * st["Atelectasis"] * c.ellipse(0.55, base - 0.14, 0.14, 0.015, angle_deg=-15) * lung
    if st["Lung Lesion"]:
        A += 0.45 * st["Lung Lesion"] * c.ellipse(0.58, 0.4, p["lesion"][3], p["lesion"][3])
    if st["Support Devices"]:
        c.polyline([(0.5, 0.0), (0.55, 0.2), (0.58, 0.38)], 0.006, 0.45 * st["Support Devices"])
    if st["Enlarged Cardiomediastinum"]:
        A += 0.3 * st["Enlarged Cardiomediastinum"] * c.ellipse(0.32, 0.35, 0.09, 0.12) * lung


# ----------------------------------------------------------------------------- film


def render_phantom(params: dict, labels: np.ndarray, size: int) -> np.ndarray:
    """Draw one phantom: (size, size) float32 in [0, 1], bright = dense."""
    strengths = sign_strengths(labels, params)
    canvas = _Canvas(size, params)
    if params["view"] == "LATERAL":
        _draw_lateral(canvas, params, strengths)
    else:
        _draw_frontal(canvas, params, strengths)
    rng = np.random.default_rng(params["noise_seed"])
    attenuation = np.clip(canvas.attenuation, 0.0, None)
    sigma = params["blur"] * size
    if sigma > 0.3:
        attenuation = ndimage.gaussian_filter(attenuation, sigma)
    film = 1.0 - np.exp(-params["contrast"] * attenuation)
    film /= 1.0 - np.exp(-params["contrast"] * 1.3)
    gx, gy = params["gradient"]
    film = film * (1.0 + gx * (canvas.u - 0.5) + gy * (canvas.v - 0.5)) + 0.04 * _smooth_noise(rng, size, 0.3)
    film = np.clip(film, 0.0, 1.0) ** params["gamma"]
    film = film + params["noise"] * rng.standard_normal((size, size)).astype(np.float32)
    return np.clip(film, 0.0, 1.0).astype(np.float32)
