"""Read one radiograph (PNG 8/16-bit, JPEG, DICOM) into a float grayscale tensor (1, H, W) in [0, 1].

Scaling uses the file's full bit depth: 8-bit images are divided by 255, 16-bit PNGs by
65535, DICOM pixel data by ``2**BitsStored - 1`` (signed data shifted first). DICOM
``MONOCHROME1`` images are inverted so that bone is bright, as in every other format.
Colour images are converted to luminance (ITU-R 601-2, as PIL's ``convert("L")``).

With ``size``, the shorter side is resized to ``size`` (bilinear, antialiased) and the
centre ``size × size`` square is cropped, so the aspect ratio is kept and the borders of
the longer side are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_irgen.errors import UserError

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)  # what read_image reads; lower case


class BadImageError(UserError):
    """A missing, truncated or undecodable image file; the message names the file."""


def read_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode ``path`` to a float32 tensor (1, H, W) in [0, 1]; ``(1, size, size)`` when ``size`` is given."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"image not found: {path}")
    try:
        pixels = _read_dicom(path) if _is_dicom(path) else _read_pil(path, size)
    except BadImageError:
        raise
    except Exception as err:  # decoders raise many types (OSError, ValueError, SyntaxError, pydicom errors)
        raise BadImageError(f"cannot decode image {path}: {type(err).__name__}: {' '.join(str(err).split())}") from None
    image = torch.from_numpy(pixels).unsqueeze(0)
    return image if size is None else resize_center_crop(image, size)


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) → (C, size, size): shorter side to ``size`` (bilinear, antialiased), then centre crop."""
    _, h, w = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[:, top : top + size, left : left + size].clamp_(0.0, 1.0).contiguous()


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


def _read_pil(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            im.draft("L", (size, size))  # decode large JPEGs at a reduced scale that is still >= size
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(im, dtype=np.float32)
            peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            return np.clip(array / peak, 0.0, 1.0)
        if mode != "L":
            im = im.convert("L")
        return np.asarray(im, dtype=np.float32) / 255.0


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise BadImageError(f"cannot decode image {path}: the DICOM file has no pixel data")
    array = ds.pixel_array.astype(np.float32)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif array.ndim == 3:
        array = array[0]  # multi-frame: the first frame
    bits = int(getattr(ds, "BitsStored", 0) or ds.BitsAllocated)
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        array += 2.0 ** (bits - 1)
    array = np.clip(array / (2.0**bits - 1.0), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        array = 1.0 - array
    return np.ascontiguousarray(array)
