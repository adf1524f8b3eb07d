"""Pixel measurements of phantom signs, from the image alone (no generator parameters).

They work on frontal (PA/AP) chest images of any size down to 32x32, as (H, W) arrays or
(1, H, W) / (1, 1, H, W) tensors in [0, 1], bright = dense, and are used to check that
generated images show the signs their labels ask for:

- :func:`heart_width_ratio`: heart width over chest width (Cardiomegaly).
- :func:`costophrenic_blunting`: lateral lung base raised relative to the mid-lung base (Pleural Effusion).
- :func:`lung_brightness`: mean brightness of the lung fields (opacities, edema).

Each reads a smoothed image row by row: a threshold halfway between the dark lung level
and the bright heart level splits a row into lung and tissue; the heart is the bright run
around the midline just above the right hemidiaphragm, the chest spans the body's outer
edges (more robust than the lung edges at 32 px).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HEART_ROWS = (0.52, 0.7)     # image-height fractions where the heart lies (its brightness; fallback band end)
HEART_SPAN = (0.12, 0.03)    # rows searched for the heart's widest part: this far above / below the right dome
THORAX_ROWS = (0.3, 0.76)    # rows where the chest width is measured
UPPER_ROWS = (0.28, 0.45)    # upper mediastinum, above the heart


def _as_image(image) -> np.ndarray:
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    array = np.squeeze(array.astype(np.float32))
    if array.ndim != 2:
        raise ValueError(f"expected one grayscale image (H, W), got shape {np.shape(image)}")
    return array


class _Profile:
    """Smoothed image, its lung/tissue threshold, its midline and the lung edges of each row.

    The smoothing is strong vertically (about one rib spacing) so ribs and vessel markings
    fade while the mostly vertical heart, mediastinum and chest-wall borders stay sharp.
    """

    def __init__(self, image):
        raw = _as_image(image)
        self.h, self.w = raw.shape
        self.image = ndimage.gaussian_filter(raw, (max(0.7, 0.03 * self.h), max(0.5, self.w / 128)))
        rows = slice(int(0.25 * self.h), int(0.72 * self.h))
        thorax = self.image[rows, int(0.1 * self.w):int(0.9 * self.w)]
        middle = self.image[rows, int(0.4 * self.w):int(0.6 * self.w)].mean(axis=0)
        self.midline = int(0.4 * self.w) + int(np.argmax(middle))
        heart = self.image[int(HEART_ROWS[0] * self.h):int(HEART_ROWS[1] * self.h), max(0, self.midline - 1):self.midline + 2]
        self.dark = float(np.percentile(thorax, 10))
        self.bright = float(np.median(heart))
        self.threshold = 0.5 * (self.dark + self.bright)
        self.background = float(np.percentile(self.image, 1))
        self.body_threshold = self.background + 0.15 * (self.bright - self.background)

    @staticmethod
    def _crossing(row: np.ndarray, bright: int, dark: int, threshold: float) -> float:
        """Sub-pixel column where ``row`` crosses ``threshold`` between neighbours ``bright`` and ``dark``."""
        a, b = row[bright], row[dark]
        return bright + (dark - bright) * float(np.clip((a - threshold) / (a - b + 1e-12), 0.0, 1.0))

    def runs(self, r: int) -> tuple[float, float, float, float] | None:
        """(body left, lung left, lung right, body right) edges of row ``r``, or None when it shows no chest.

        The body edges are where the dark background ends; the lung edges are the first
        lung-dark pixels on either side of the bright midline (the heart or mediastinum
        border), NaN on a side with no aerated lung (the heart or fluid reaches the wall).
        """
        row = self.image[r]
        mid = self.midline
        if row[mid] < self.threshold:
            return None
        body = np.flatnonzero(row > self.body_threshold)
        if len(body) == 0:
            return None
        first, last = int(body[0]), int(body[-1])
        edges = [
            self._crossing(row, first, first - 1, self.body_threshold) if first > 0 else -0.5, float("nan"), float("nan"),
            self._crossing(row, last, last + 1, self.body_threshold) if last < self.w - 1 else self.w - 0.5,
        ]
        dark = row < self.threshold
        left_dark = np.flatnonzero(dark[first:mid])
        right_dark = mid + np.flatnonzero(dark[mid:last + 1])
        if len(left_dark):
            x = first + int(left_dark[-1])
            edges[1] = self._crossing(row, x + 1, x, self.threshold)
        if len(right_dark):
            edges[2] = self._crossing(row, int(right_dark[0]) - 1, int(right_dark[0]), self.threshold)
        return tuple(edges)

    def rows(self, band: tuple[float, float]) -> list[tuple[float, float, float, float]]:
        first = int(band[0] * self.h)
        last = min(self.h, max(first + 1, int(round(band[1] * self.h))))
        return [edges for r in range(first, last) if (edges := self.runs(r)) is not None]

    def lowest_lung_rows(self) -> np.ndarray:
        """(W,) the lowest lung-dark row of each column, searched below 40% of the height."""
        start = int(0.4 * self.h)
        dark = self.image[start:] < self.threshold
        return start + dark.shape[0] - 1 - np.argmax(dark[::-1], axis=0)

    def dome_row(self) -> int:
        """Row of the top of the right hemidiaphragm (image left; usually the higher one, and never behind the heart).

        Each column of the middle of the right lung ends at its lowest dark pixel (medial to
        the rising meniscus of an effusion); the dome top is the median of those rows.
        """
        lowest = self.lowest_lung_rows()
        thorax = self.chest_width()
        reach = 0.5 * thorax if np.isfinite(thorax) else 0.35 * self.w
        columns = lowest[max(0, int(self.midline - 0.7 * reach)):max(1, int(np.ceil(self.midline - 0.4 * reach)))]
        return int(np.percentile(columns, 50)) if len(columns) else int(HEART_ROWS[1] * self.h)

    def chest_width(self) -> float:
        """Outer width of the chest (90th percentile over the thorax rows), in pixels."""
        widths = [right - left for left, _, _, right in self.rows(THORAX_ROWS)]
        return float(np.percentile(widths, 90)) if widths else float("nan")


def heart_width_ratio(image) -> float:
    """Heart width over chest width of a frontal image (phantoms: about 0.36-0.47 normal, 0.5-0.7 with cardiomegaly).

    The heart width is the 75th percentile of the bright run around the midline over the rows
    around the top of the right hemidiaphragm (where the heart is widest; a side without
    aerated lung counts up to the body edge); the chest width is the 90th percentile of the
    body's outer width over the chest rows. NaN when no chest is found.
    """
    profile = _Profile(image)
    dome = profile.dome_row() / profile.h
    band = (max(0.4, dome - HEART_SPAN[0]), max(0.4 + 1.0 / profile.h, dome + HEART_SPAN[1]))
    hearts = [
        (right if right == right else outer_right) - (left if left == left else outer_left)
        for outer_left, left, right, outer_right in profile.rows(band)
    ]
    if not hearts:
        return float("nan")
    return float(np.percentile(hearts, 75) / profile.chest_width())


def heart_width_ratios(images) -> np.ndarray:
    """:func:`heart_width_ratio` of each image of a batch (B, 1, H, W) or (B, H, W): (B,)."""
    return np.array([heart_width_ratio(image) for image in images], dtype=np.float32)


def costophrenic_blunting(image) -> float:
    """How far the lateral lung base sits above the mid-lung base, as a fraction of the image height (effusion).

    A sharp costophrenic angle reaches below the dome (negative values, about -0.1 to -0.03);
    fluid fills the angle up to a meniscus that climbs laterally (higher values). The larger
    of the two sides is returned; on the patient's left a large heart can hide the mid-lung
    base, so left-sided effusions read weaker.
    """
    profile = _Profile(image)
    chest = profile.chest_width()
    if not np.isfinite(chest):
        return float("nan")
    lowest = profile.lowest_lung_rows()
    reach = 0.5 * chest
    values = []
    for side in (-1, 1):
        def band(a: float, b: float) -> np.ndarray:
            near, far = sorted((profile.midline + side * a * reach, profile.midline + side * b * reach))
            return lowest[max(0, int(near)):min(profile.w, int(np.ceil(far)))]

        middle, lateral = band(0.4, 0.6), band(0.75, 0.9)
        if len(middle) and len(lateral):
            values.append((np.median(middle) - np.median(lateral)) / profile.h)
    return float(max(values)) if values else float("nan")


def lung_brightness(image) -> float:
    """Mean brightness of the lung fields on a background (0) to heart (1) scale; clear phantom lungs read ~0.35-0.4.

    The fields are the columns between the upper mediastinum and the body's outer edges (less
    a margin), over the upper and middle chest; opacities, consolidation and edema raise it.
    """
    profile = _Profile(image)
    thorax = profile.chest_width()
    upper = [right - left for _, left, right, _ in profile.rows(UPPER_ROWS)]
    if not np.isfinite(thorax) or not upper:
        return float("nan")
    inner, outer = 0.5 * float(np.median(upper)), 0.5 * thorax
    fields = profile.image[int(0.25 * profile.h):int(0.62 * profile.h)]
    cols = np.abs(np.arange(profile.w) - profile.midline)
    inside = (cols > inner + 0.02 * profile.w) & (cols < outer - 0.02 * profile.w)
    if not inside.any():
        return float("nan")
    level = (fields[:, inside].mean() - profile.background) / max(1e-6, profile.bright - profile.background)
    return float(level)
