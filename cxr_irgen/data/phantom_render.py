"""Procedural chest radiograph phantoms: anatomy plus label-driven signs, drawn with numpy.

A phantom is described by :func:`sample_phantom` (a plain dict of numbers drawn from a
seeded generator: pose, exposure, anatomy and the placement of every possible sign) and
drawn by :func:`render_phantom` for a label vector. All random draws happen in
:func:`sample_phantom` whatever the labels, so the same parameters rendered with and
without a label differ only by that label's sign.

Drawing works in *attenuation*: soft tissue, bone, fluid and devices add to a map ``A``
and air (lungs, trachea, stomach bubble) subtracts; the film value is ``1 - exp(-k A)``
(bright = dense), as on a radiograph. Geometry lives in patient coordinates ``(u, v)`` in
[0, 1] (``u`` to the image right = the patient's left, ``v`` downwards), so every image
size shows the same picture. Side ``+1`` is the patient's left (image right), ``-1`` the
patient's right.

Signs (positive: drawn at full strength; uncertain: drawn faintly in about half of the
phantoms; negative or blank: absent):

- Cardiomegaly: wider heart (cardiothoracic ratio ~0.58-0.66 instead of ~0.40-0.48).
- Enlarged Cardiomediastinum: widened upper mediastinum.
- Pleural Effusion: fluid filling one or both costophrenic angles up to a meniscus.
- Lung Opacity / Consolidation / Pneumonia: patchy opacities (faint multifocal / dense
  lobar with air bronchograms / a cluster of patches at a base).
- Edema: bilateral perihilar haze with septal (Kerley B) lines at the bases.
- Pneumothorax: lucent lateral-apical rim without lung markings behind a thin pleural line.
- Atelectasis: plate-like band at a base and an elevated hemidiaphragm (volume loss).
- Support Devices: bright thin tubes and lines (endotracheal, enteric, central line, ECG leads).
- Lung Lesion: a round nodule. Fracture: a displaced rib discontinuity.
- Pleural Other: lobulated pleural thickening along a lateral chest wall.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from cxr_irgen.data.labels import LABEL_INDEX, POSITIVE, UNCERTAIN

VIEWS = ("PA", "AP", "LATERAL")
SIGNS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
UNCERTAIN_STRENGTH = 0.45
AIR = 0.6  # attenuation removed by fully aerated lung


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


def sample_phantom(rng: np.random.Generator, view: str) -> dict:
    """All random numbers of one phantom (pose, exposure, anatomy and every sign's placement) as a dict."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    U = rng.uniform

    def side() -> float:
        return float(rng.choice((-1.0, 1.0)))

    ap = view == "AP"
    p = {
        "view": view,
        "scale": U(0.93, 1.03), "shift": (U(-0.025, 0.025), U(-0.02, 0.03)), "rotation": U(-3.0, 3.0),
        "contrast": U(1.25, 1.55), "gamma": U(0.9, 1.25), "noise": U(0.006, 0.018),
        "gradient": (U(-0.08, 0.08), U(-0.05, 0.08)), "blur": U(0.002, 0.0035) * (1.8 if ap else 1.0),
        "noise_seed": int(rng.integers(2**31)),
        "mediastinum": U(0.05, 0.065), "lung_half_width": U(0.15, 0.17), "apex": U(0.1, 0.14) + (0.02 if ap else 0.0),
        "base": U(0.76, 0.8) - (0.035 if ap else 0.0), "dome": U(0.06, 0.09), "left_drop": U(0.01, 0.03),
        "heart_ratio": U(0.39, 0.47) * (1.08 if ap else 1.0), "heart_height": U(0.17, 0.2),
        "clavicle_level": U(0.16, 0.2) - (0.055 if ap else 0.0), "clavicle_slope": U(0.1, 0.25) * (0.25 if ap else 1.0),
        "rib_count": U(9.0, 10.0), "rib_curve": U(1.5, 2.0), "body_width": U(0.41, 0.44), "breast": U(0.0, 0.15),
        "vessels": [(s, U(-1.3, 1.3), U(0.1, 0.22), U(-0.5, 0.5)) for s in (-1.0, 1.0) for _ in range(6)],
        "uncertain_shown": {name: bool(rng.random() < 0.5) for name in SIGNS},
        "cardiomegaly_ratio": U(0.6, 0.68) * (1.08 if ap else 1.0),
        "mediastinum_widening": U(0.035, 0.055),
        "effusion_sides": [(-1.0,), (1.0,), (-1.0, 1.0)][int(rng.integers(3))], "effusion_height": U(0.07, 0.14),
        "opacity_patches": [(side(), U(0.3, 0.8), U(0.25, 0.8), U(0.03, 0.055)) for _ in range(int(rng.integers(3, 6)))],
        "consolidation": (side(), U(0.4, 0.75), U(0.5, 0.75), U(0.06, 0.085)),
        "pneumonia": (side(), U(0.35, 0.7), U(0.6, 0.8)),
        "pneumonia_patches": [(U(-0.08, 0.08), U(-0.06, 0.06), U(0.012, 0.025)) for _ in range(9)],
        "lesion": (side(), U(0.3, 0.75), U(0.2, 0.65), U(0.018, 0.035)),
        "atelectasis": (side(), U(0.6, 0.85), U(-15, 15), U(0.01, 0.016)),
        "pneumothorax": (side(), U(0.045, 0.08)),
        "pleural_other": (side(), U(0.012, 0.022), U(0.3, 0.5)),
        "fracture": (side(), int(rng.integers(3, 7)), U(0.55, 0.85)),
        "devices": {
            "endotracheal": bool(rng.random() < 0.6), "enteric": bool(rng.random() < 0.5),
            "central_line": bool(rng.random() < 0.7), "leads": bool(rng.random() < 0.5),
            "line_side": side(), "tip": U(0.3, 0.4), "lead_spots": [(U(0.15, 0.85), U(0.12, 0.6)) for _ in range(3)],
        },
    }
    devices = p["devices"]
    devices["central_line"] = devices["central_line"] or not (devices["endotracheal"] or devices["enteric"])
    return p


@lru_cache(maxsize=16)
def _interpolation(size: int, coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower coarse-grid index (size,) and weight (size, 1) of each image row for linear upsampling."""
    position = (np.arange(size) + 0.5) / size * (coarse - 1)
    lower = np.minimum(position.astype(np.int64), coarse - 2)
    return lower, (position - lower).astype(np.float32)[:, None]


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean noise with features about ``scale`` of the image wide, (size, size); no BLAS (cheap on busy CPUs)."""
    coarse = max(3, int(round(1.0 / scale)) + 1)
    lower, weight = _interpolation(size, coarse)
    grid = rng.standard_normal((coarse, coarse)).astype(np.float32)
    rows = grid[lower] * (1 - weight) + grid[lower + 1] * weight
    return (rows[:, lower] * (1 - weight.T) + rows[:, lower + 1] * weight.T).astype(np.float32)


class _Canvas:
    """Patient-coordinate grids ``u, v`` (H, W) for a posed image, and the attenuation map being drawn."""

    def __init__(self, size: int, params: dict):
        self.size = size
        self.px = 1.0 / size
        self.cos, self.sin = np.cos(np.deg2rad(params["rotation"])), np.sin(np.deg2rad(params["rotation"]))
        self.scale, self.shift = params["scale"], params["shift"]
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        x = (x + 0.5) / size - 0.5
        y = (y + 0.5) / size - 0.5
        self.u = ((self.cos * x + self.sin * y) / self.scale + 0.5 - self.shift[0]).astype(np.float32)
        self.v = ((-self.sin * x + self.cos * y) / self.scale + 0.5 - self.shift[1]).astype(np.float32)
        self.attenuation = np.zeros((size, size), np.float32)
        self.edge = max(0.004, 0.8 * self.px)

    def window(self, u0: float, v0: float, u1: float, v1: float) -> tuple[slice, slice] | None:
        """Pixel slices (rows, cols) covering the patient-coordinate box, or None when it is off the image."""
        corners = np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]]) - 0.5 + np.array(self.shift)
        corners *= self.scale
        cols = (self.cos * corners[:, 0] - self.sin * corners[:, 1] + 0.5) * self.size
        rows = (self.sin * corners[:, 0] + self.cos * corners[:, 1] + 0.5) * self.size
        c0, c1 = max(0, int(cols.min()) - 2), min(self.size, int(np.ceil(cols.max())) + 2)
        r0, r1 = max(0, int(rows.min()) - 2), min(self.size, int(np.ceil(rows.max())) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def soft(self, distance: np.ndarray, width: float | None = None) -> np.ndarray:
        """Inside-mask ramping from 0 to 1 across ``width`` (patient units) around distance 0 (positive inside)."""
        w = width or self.edge
        return np.clip(distance / (2 * w) + 0.5, 0.0, 1.0)

    def ellipse(self, cx, cy, rx, ry, angle_deg=0.0, edge=None) -> np.ndarray:
        """Soft filled (rotated) ellipse, (H, W)."""
        out = np.zeros_like(self.attenuation)
        reach = max(rx, ry) * (1.0 + (edge or self.edge) / min(rx, ry)) + 0.01  # the soft edge included
        box = self.window(cx - reach, cy - reach, cx + reach, cy + reach)
        if box is None:
            return out
        a = np.deg2rad(angle_deg)
        du, dv = self.u[box] - cx, self.v[box] - cy
        x = (np.cos(a) * du + np.sin(a) * dv) / rx
        y = (-np.sin(a) * du + np.cos(a) * dv) / ry
        out[box] = self.soft((1.0 - np.sqrt(x * x + y * y)) * min(rx, ry), edge)
        return out

    def gaussian(self, cx, cy, sx, sy=None) -> np.ndarray:
        """Gaussian bump of height 1, (H, W)."""
        sy = sx if sy is None else sy
        out = np.zeros_like(self.attenuation)
        box = self.window(cx - 3 * sx, cy - 3 * sy, cx + 3 * sx, cy + 3 * sy)
        if box is not None:
            out[box] = np.exp(-0.5 * (((self.u[box] - cx) / sx) ** 2 + ((self.v[box] - cy) / sy) ** 2))
        return out

    def polyline(self, points, width: float, value: float, taper: bool = False) -> None:
        """Add a bright (value > 0) or dark line through ``points`` [(u, v), ...] about ``width`` wide."""
        width = max(width, 0.7 * self.px)
        count = len(points) - 1
        for i in range(count):
            (u0, v0), (u1, v1) = points[i], points[i + 1]
            w = width * (1.0 - 0.6 * i / count) if taper else width
            box = self.window(min(u0, u1) - 2 * w, min(v0, v1) - 2 * w, max(u0, u1) + 2 * w, max(v0, v1) + 2 * w)
            if box is None:
                continue
            u, v = self.u[box], self.v[box]
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-12), 0.0, 1.0)
            d2 = (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2
            self.attenuation[box] += value * np.exp(d2 * (-2.0 / (w * w)))


class _Chest:
    """Frontal geometry shared by anatomy and signs: lung masks and distances, domes, heart, mediastinum."""

    def __init__(self, c: _Canvas, p: dict, st: dict[str, float]):
        u, v = c.u, c.v
        self.width = p["lung_half_width"]
        self.thorax = 2 * (p["mediastinum"] + 2 * self.width)
        ratio = p["heart_ratio"] + st["Cardiomegaly"] * (p["cardiomegaly_ratio"] - p["heart_ratio"])
        self.heart_rx = 0.5 * ratio * self.thorax
        widening = st["Enlarged Cardiomediastinum"] * p["mediastinum_widening"]
        upper = np.exp(-0.5 * ((v - 0.3) / 0.09) ** 2)
        self.mediastinum = p["mediastinum"] + (0.01 + widening) * upper
        # costophrenic level of each side at rest (heart, ribs and bubble sit on it) and as drawn
        self.rest_base = {-1.0: p["base"], 1.0: p["base"] + p["left_drop"]}
        self.base, self.lateral, self.wall, self.dome, self.distance, self.lung = {}, {}, {}, {}, {}, {}
        for s in (-1.0, 1.0):
            base = self.rest_base[s] - (0.045 * st["Atelectasis"] if s == p["atelectasis"][0] else 0.0)
            self.base[s] = base
            center = 0.5 + s * (p["mediastinum"] + self.width)
            t = np.clip((0.5 - v) / (0.5 - p["apex"]), 0.0, 1.0)
            half = self.width * (1.0 + 0.15 * np.clip(v - 0.3, 0.0, None)) * np.sqrt(1.0 - t * t)
            lateral = half - np.abs(u - center) - 0.5 * np.clip(p["apex"] - v, 0.0, None)
            dome = base - p["dome"] * np.clip(1.0 - ((u - center + s * 0.015) / (self.width + 0.03)) ** 2, 0.0, None)
            medial = s * (u - 0.5) - self.mediastinum
            self.lateral[s] = lateral
            self.wall[s] = half - s * (u - center)  # inward distance from the lateral chest wall
            self.dome[s] = dome - v
            self.distance[s] = np.minimum(np.minimum(lateral, dome - v), medial)
            self.lung[s] = c.soft(self.distance[s])
        self.lungs = self.lung[-1.0] + self.lung[1.0]
        self.dome_top = {s: self.rest_base[s] - p["dome"] for s in (-1.0, 1.0)}
        self.apex = p["apex"]

    def heart_silhouette(self, c: _Canvas, p: dict) -> np.ndarray:
        """Cardiac silhouette (H, W): hangs from the mediastinum and is widest just above the left dome.

        At its widest row it spans ``0.64 rx`` to the patient's right and ``1.36 rx`` to the
        left of the midline (width ``2 rx``); the right border (right atrium) is rounded, the
        left border slopes down to the apex; below the widest row it rounds off under the domes.
        """
        widest = self.dome_top[1.0] - 0.04
        t = np.clip((widest - c.v) / p["heart_height"], 0.0, 1.0)
        below = np.clip((c.v - widest) / 0.1, 0.0, 1.0)
        taper = np.sqrt(1.0 - below * below)
        neck = p["mediastinum"]
        right = neck + (0.64 * self.heart_rx - neck) * np.sqrt(1.0 - t * t)
        left = neck + (1.36 * self.heart_rx - neck) * (1.0 - t ** 1.8) ** 0.8
        inside = np.minimum(c.u - 0.5 + right * taper, 0.5 + left * taper - c.u)
        return c.soft(np.minimum(inside, widest + 0.1 - c.v), 0.008) * c.soft(c.v - widest + p["heart_height"] + 0.02, 0.02)

    def point(self, s: float, across: float, down: float) -> tuple[float, float]:
        """A point in lung ``s``: ``across`` 0 medial .. 1 lateral, ``down`` 0 apex .. 1 dome top."""
        u = 0.5 + s * (0.075 + across * (2 * self.width - 0.05))
        v = self.apex + 0.04 + down * (self.dome_top[s] - self.apex - 0.04)
        return u, v


def _draw_frontal(c: _Canvas, p: dict, st: dict[str, float], rng: np.random.Generator) -> None:
    g = _Chest(c, p, st)
    u, v, A = c.u, c.v, c.attenuation
    ap = p["view"] == "AP"
    x, y = (u - 0.5) / p["body_width"], (v - 0.68) / 0.64
    torso = np.clip(1.0 - np.abs(x) ** 3 - np.abs(y) ** 3, 0.0, 1.0) ** 0.35
    neck = np.sqrt(np.clip(1.0 - ((u - 0.5) / 0.075) ** 2, 0.0, 1.0)) * c.soft(0.2 - v, 0.03)
    shoulders = sum(0.8 * c.ellipse(0.5 + s * 0.24, 0.13, 0.2, 0.06, angle_deg=s * 22, edge=0.03) for s in (-1.0, 1.0))
    A += 0.9 * np.maximum(np.maximum(torso, neck), shoulders)
    for s in (-1.0, 1.0):  # humeral heads at the top corners
        A += 0.2 * c.ellipse(0.5 + s * (p["body_width"] - 0.015), 0.15, 0.04, 0.045, edge=0.006)
    if p["breast"]:
        A += p["breast"] * (c.gaussian(0.5 - 0.22, 0.82, 0.11, 0.07) + c.gaussian(0.5 + 0.22, 0.82, 0.11, 0.07))
    # heart and aortic knob hide the lung air behind them
    heart = g.heart = g.heart_silhouette(c, p)
    knob = c.ellipse(0.5 + p["mediastinum"] + 0.01 + st["Enlarged Cardiomediastinum"] * p["mediastinum_widening"], 0.29, 0.03, 0.028)
    wall = np.minimum(np.maximum(g.wall[-1.0], g.wall[1.0]), np.maximum(g.dome[-1.0], g.dome[1.0]))
    depth = np.clip(wall / 0.05, 0.0, 1.0)
    A -= AIR * g.lungs * (0.6 + 0.4 * depth) * (1.0 - np.maximum(heart, knob))
    # spine (faint through the heart), trachea and main bronchi
    spine = c.soft(0.026 - np.abs(u - 0.5)) * c.soft(v - 0.02)
    A += 0.1 * spine * (0.6 + 0.4 * np.cos(np.pi * v / 0.05) ** 2)
    A -= 0.2 * c.soft(0.013 - np.abs(u - 0.5)) * c.soft(0.3 - v) * c.soft(v - 0.02)
    for s in (-1.0, 1.0):
        c.polyline([(0.5, 0.3), (0.5 + s * 0.05, 0.36 + 0.015 * s)], 0.02, -0.12)
    # hila and branching vessels: lung markings
    for s in (-1.0, 1.0):
        A += 0.1 * c.gaussian(0.5 + s * (p["mediastinum"] + 0.02), 0.45, 0.02, 0.04)
    for s, angle, length, bend in p["vessels"]:
        start = np.array([0.5 + s * (p["mediastinum"] + 0.03), 0.45])
        a, b = angle, angle + s * bend
        mid = start + 0.5 * length * np.array([s * np.cos(a), np.sin(a)])
        end = mid + 0.5 * length * np.array([s * np.cos(b), np.sin(b)])
        twig = mid + 0.25 * length * np.array([s * np.cos(a - 0.6), np.sin(a - 0.6)])
        c.polyline([tuple(start), tuple(mid), tuple(end)], 0.01, 0.06, taper=True)
        c.polyline([tuple(mid), tuple(twig)], 0.005, 0.04)
    ridges = np.clip(1.0 - np.abs(smooth_noise(rng, c.size, 0.03)) / 0.3, 0.0, 1.0) ** 2
    hilar = sum(c.gaussian(0.5 + s * (p["mediastinum"] + 0.03), 0.45, 0.2, 0.25) for s in (-1.0, 1.0))
    A += (0.07 * ridges * hilar + 0.03 * smooth_noise(rng, c.size, 0.05)) * g.lungs
    _draw_ribs(c, g, p, st)
    # clavicles, and scapulae over the upper lungs on AP films
    for s in (-1.0, 1.0):
        level, slope = p["clavicle_level"], p["clavicle_slope"]
        pts = [(0.5 + s * d, level - slope * (d - 0.04) + 0.025 * np.sin(d * 14)) for d in (0.035, 0.1, 0.17, 0.24, 0.31)]
        c.polyline(pts, 0.024, 0.22)
        if ap:
            A += 0.1 * c.ellipse(0.5 + s * 0.36, 0.3, 0.07, 0.15, angle_deg=s * 12) * g.lungs
    A -= 0.22 * c.ellipse(0.5 + p["mediastinum"] + 0.9 * g.width, g.rest_base[1.0] + 0.045, 0.045, 0.025)
    _draw_frontal_signs(c, g, p, st, rng)


def _draw_ribs(c: _Canvas, g: _Chest, p: dict, st: dict[str, float]) -> None:
    """Posterior ribs (rising from the spine, then arching down laterally), fainter anterior ribs sloping down
    towards the sternum, and the fracture sign (a displaced segment of one posterior rib)."""
    u, v, A = c.u, c.v, c.attenuation
    d = np.abs(u - 0.5)
    reach = (v - g.apex + 0.05) / (g.rest_base[-1.0] - g.apex + 0.03)
    posterior = reach - p["rib_curve"] * (d - 0.14) ** 2
    anterior = reach - 0.35 * (0.45 - d) + 0.3
    for t, offset, strength, width in ((posterior, 0.0, 0.12, 0.2), (anterior, 0.45, 0.05, 0.15)):
        t = np.clip(t, 0.0, None)
        phase = t * (1.35 - 0.35 * t) * p["rib_count"] + offset
        if offset == 0.0 and st["Fracture"]:
            s, index, along = p["fracture"]
            at = 0.5 + s * (p["mediastinum"] + along * 2 * g.width)
            piece = (np.abs(u - at - s * 0.025) < 0.025) & (np.abs(phase - index - 0.3) < 0.7)
            phase = np.where(piece, phase + 0.45 * st["Fracture"], phase)
        band = np.clip(1.0 - np.abs(phase - np.floor(phase) - 0.3) / width, 0.0, 1.0)
        cage = c.soft(0.5 * g.thorax + 0.02 - d, 0.01) * c.soft(d - 0.03, 0.01) * c.soft(phase - 0.3, 0.02)
        cage *= c.soft(g.rest_base[-1.0] + 0.02 - v, 0.02) * c.soft(v - g.apex + 0.06, 0.02)
        A += strength * band * band * (3.0 - 2.0 * band) * cage


def _draw_frontal_signs(c: _Canvas, g: _Chest, p: dict, st: dict[str, float], rng: np.random.Generator) -> None:
    u, v, A = c.u, c.v, c.attenuation
    texture = np.clip(0.75 + 0.35 * smooth_noise(rng, c.size, 0.06), 0.3, 1.2)
    if st["Pleural Effusion"]:
        for s in p["effusion_sides"]:
            lateral = np.clip((s * (u - 0.5) - p["mediastinum"]) / (2 * g.width), 0.0, 1.0)
            level = g.base[s] - p["effusion_height"] * (0.6 + 0.6 * lateral * lateral)
            A += 0.7 * st["Pleural Effusion"] * g.lung[s] * c.soft(v - level, 0.015) * (1.0 - 0.85 * g.heart)
    if st["Lung Opacity"]:
        for s, across, down, r in p["opacity_patches"]:
            A += 0.2 * st["Lung Opacity"] * c.gaussian(*g.point(s, across, down), r, 1.3 * r) * texture * g.lungs
    if st["Consolidation"]:
        s, across, down, r = p["consolidation"]
        cx, cy = g.point(s, across, down)
        A += 0.42 * st["Consolidation"] * c.ellipse(cx, cy, 1.3 * r, r, edge=0.02) * texture * g.lungs
        for k in range(3):  # air bronchograms
            c.polyline([(cx - s * 0.03, cy - 0.02 + 0.015 * k), (cx + s * 0.04, cy + 0.01 + 0.02 * k)], 0.006, -0.1 * st["Consolidation"])
    if st["Pneumonia"]:
        s, across, down = p["pneumonia"]
        cx, cy = g.point(s, across, down)
        for du, dv, r in p["pneumonia_patches"]:
            A += 0.22 * st["Pneumonia"] * c.gaussian(cx + du, cy + dv, r) * g.lungs
    if st["Edema"]:
        haze = c.gaussian(0.5 - p["mediastinum"] - 0.06, 0.48, 0.08, 0.12) + c.gaussian(0.5 + p["mediastinum"] + 0.06, 0.48, 0.08, 0.12)
        A += 0.32 * st["Edema"] * haze * texture * g.lungs
        for s in (-1.0, 1.0):
            edge = 0.5 + s * (p["mediastinum"] + 2 * g.width)
            for k in range(4):
                y = g.base[s] - 0.03 - 0.022 * k
                c.polyline([(edge, y), (edge - s * 0.035, y)], 0.004, 0.1 * st["Edema"])
    if st["Atelectasis"]:
        s, down, angle, thick = p["atelectasis"]
        A += 0.45 * st["Atelectasis"] * c.ellipse(*g.point(s, 0.55, down), 0.1, thick, angle_deg=angle) * g.lungs
    if st["Lung Lesion"]:
        s, across, down, r = p["lesion"]
        A += 0.45 * st["Lung Lesion"] * c.ellipse(*g.point(s, across, down), r, r)
    if st["Pleural Other"]:
        s, thick, top = p["pleural_other"]
        lobes = 1.0 + 0.5 * np.sin(v * 70.0)
        band = c.soft(thick * lobes - g.wall[s], 0.005) * g.lung[s] * c.soft(v - top, 0.03) * c.soft(top + 0.3 - v, 0.03)
        A += 0.45 * st["Pleural Other"] * band
    if st["Pneumothorax"]:
        s, gap = p["pneumothorax"]
        rim_distance = np.minimum(g.wall[s], g.distance[s] + 0.25 * (v - g.apex))
        upper = c.soft(g.base[s] - 0.12 - v, 0.03)
        rim = g.lung[s] * c.soft(gap - rim_distance, 0.004) * upper
        markings = np.clip(A - ndimage.uniform_filter(A, size=max(3, c.size // 20)), 0.0, None)
        A -= st["Pneumothorax"] * rim * (0.12 + markings)
        line = np.exp(-0.5 * ((rim_distance - gap) / max(0.003, 0.5 * c.px)) ** 2)
        A += 0.14 * st["Pneumothorax"] * line * g.lung[s] * upper
    if st["Support Devices"]:
        _draw_devices(c, p, st["Support Devices"], g.rest_base[1.0])


def _draw_devices(c: _Canvas, p: dict, strength: float, stomach: float) -> None:
    dev, s, level = p["devices"], p["devices"]["line_side"], p["clavicle_level"]
    if dev["endotracheal"]:
        c.polyline([(0.5, 0.0), (0.5, 0.12), (0.502, 0.25)], 0.008, 0.5 * strength)
    if dev["enteric"]:
        c.polyline([(0.49, 0.0), (0.485, 0.3), (0.5, 0.6), (0.53, stomach + 0.02), (0.62, stomach + 0.06)], 0.006, 0.45 * strength)
    if dev["central_line"]:
        c.polyline([(0.5 + s * 0.3, level + 0.03), (0.5 + s * 0.13, level + 0.06), (0.5 + s * 0.04, 0.26), (0.47, dev["tip"])], 0.005, 0.5 * strength)
    if dev["leads"]:
        for lu, lv in dev["lead_spots"]:
            ring = c.ellipse(lu, lv, 0.016, 0.016) - c.ellipse(lu, lv, 0.009, 0.009)
            c.attenuation += 0.4 * strength * ring
            c.polyline([(lu, lv), (lu + 0.08, lv - 0.12), (lu + 0.12, 0.0)], 0.004, 0.3 * strength)


def _draw_lateral(c: _Canvas, p: dict, st: dict[str, float], rng: np.random.Generator) -> None:
    """Lateral view, patient facing the image left: sternum in front, spine behind, one lung field."""
    u, v, A = c.u, c.v, c.attenuation
    x, y = (u - 0.5) / (p["body_width"] - 0.04), (v - 0.62) / 0.6
    body = np.sqrt(np.clip(1.0 - np.abs(x) ** 3 - np.abs(y) ** 3, 0.0, 1.0))
    neck = np.sqrt(np.clip(1.0 - ((u - 0.55) / 0.13) ** 2, 0.0, 1.0)) * c.soft(0.15 - v, 0.04)
    A += 1.0 * np.maximum(body, neck)
    for dx in (0.0, 0.06):  # raised arms crossing the upper chest
        A += 0.15 * c.ellipse(0.3 + dx, 0.1, 0.045, 0.22, angle_deg=40)
        c.polyline([(0.12 + dx, -0.05), (0.42 + dx, 0.25)], 0.018, 0.1)
    base = p["base"] + 0.03
    dome = base - 0.1 * np.clip(1.0 - ((u - 0.42) / 0.38) ** 2, 0.0, None) + 0.08 * np.clip(u - 0.45, 0.0, None)
    t = np.clip((0.45 - v) / (0.45 - p["apex"]), 0.0, 1.0)
    half = 0.3 * np.sqrt(1.0 - t * t) * (1.0 + 0.1 * np.clip(v - 0.45, 0.0, None))
    field = c.soft(np.minimum(half - np.abs(u - 0.52), dome - v), 0.012) * c.soft(v - p["apex"], 0.01)
    ratio = p["heart_ratio"] + st["Cardiomegaly"] * (p["cardiomegaly_ratio"] - p["heart_ratio"])
    heart_r = 0.36 * ratio
    heart = c.ellipse(0.22 + 0.9 * heart_r, base - 0.05 - 0.6 * heart_r, 1.05 * heart_r, 0.8 * heart_r + 0.03, angle_deg=-40, edge=0.012)
    hilum = c.gaussian(0.55, 0.45, 0.05, 0.06)
    A -= AIR * field * (1.0 - 0.85 * heart) * (1.0 - 0.3 * hilum)
    spine = c.soft(0.05 - np.abs(u - 0.8 - 0.06 * (v - 0.5)), 0.008) * c.soft(v - 0.08)
    discs = c.soft(np.abs(((v - 0.1) / 0.05) % 1.0 - 0.5) - 0.08, 0.08)
    A += 0.22 * spine * (0.5 + 0.5 * discs)
    A += 0.2 * c.soft(0.008 - np.abs(u - 0.19 - 0.12 * (v - 0.3))) * c.soft(v - 0.2) * c.soft(0.7 - v)
    A -= 0.18 * c.soft(0.013 - np.abs(u - 0.55 - 0.1 * (v - 0.1))) * c.soft(0.36 - v)
    for k in range(9):  # faint oblique ribs
        y0 = 0.2 + 0.062 * k
        c.polyline([(0.22, y0 - 0.06), (0.5, y0 + 0.01), (0.82, y0 + 0.07)], 0.014, 0.045)
    A += 0.04 * smooth_noise(rng, c.size, 0.04) * field
    texture = np.clip(0.75 + 0.35 * smooth_noise(rng, c.size, 0.06), 0.3, 1.2)
    if st["Pleural Effusion"]:  # the posterior costophrenic sulcus fills
        level = base - p["effusion_height"] * (0.3 + 1.2 * np.clip((u - 0.45) / 0.35, 0.0, 1.0) ** 2)
        A += 0.65 * st["Pleural Effusion"] * field * c.soft(v - level, 0.015)
    for name, strength, cy in (("Lung Opacity", 0.2, 0.5), ("Consolidation", 0.4, 0.62), ("Pneumonia", 0.3, 0.64), ("Edema", 0.25, 0.45)):
        if st[name]:
            A += strength * st[name] * c.gaussian(0.55, cy, 0.09, 0.08) * texture * field
    if st["Atelectasis"]:
        A += 0.35 * st["Atelectasis"] * c.ellipse(0.58, base - 0.1, 0.14, 0.014, angle_deg=-15) * field
    if st["Lung Lesion"]:
        A += 0.45 * st["Lung Lesion"] * c.ellipse(0.58, 0.35, p["lesion"][3], p["lesion"][3])
    if st["Enlarged Cardiomediastinum"]:
        A += 0.3 * st["Enlarged Cardiomediastinum"] * c.ellipse(0.36, 0.33, 0.09, 0.12, edge=0.015) * field
    if st["Support Devices"]:
        c.polyline([(0.5, 0.0), (0.54, 0.2), (0.57, 0.36)], 0.007, 0.45 * st["Support Devices"])
        c.polyline([(0.6, 0.0), (0.66, 0.4), (0.62, base + 0.03)], 0.006, 0.4 * st["Support Devices"])


def render_phantom(params: dict, labels: np.ndarray, size: int) -> np.ndarray:
    """Draw one phantom for a (14,) label vector: (size, size) float32 in [0, 1], bright = dense."""
    strengths = sign_strengths(labels, params)
    canvas = _Canvas(size, params)
    draw = _draw_lateral if params["view"] == "LATERAL" else _draw_frontal
    draw(canvas, params, strengths, np.random.default_rng([params["noise_seed"], 1]))
    rng = np.random.default_rng(params["noise_seed"])
    attenuation = np.clip(canvas.attenuation, 0.0, None)
    sigma = params["blur"] * size
    if sigma > 0.3:
        attenuation = ndimage.gaussian_filter(attenuation, sigma, truncate=3.0)
    film = (1.0 - np.exp(-params["contrast"] * attenuation)) / (1.0 - np.exp(-params["contrast"] * 1.25))
    gx, gy = params["gradient"]
    film = film * (1.0 + gx * (canvas.u - 0.5) + gy * (canvas.v - 0.5)) + 0.03 * smooth_noise(rng, size, 0.3)
    film = np.clip(film, 0.0, 1.0) ** params["gamma"] + params["noise"] * rng.standard_normal((size, size), np.float32)
    return np.clip(film, 0.0, 1.0).astype(np.float32)
