"""Image IO: every format of ../shared/data/xrv-samples, 16-bit PNG, DICOM inversion, resizing, bad files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_irgen.data.imageio import BadImageError, read_image, resize_center_crop
from cxr_irgen.errors import UserError


def _check(image: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert image.dtype == torch.float32 and tuple(image.shape) == shape
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert float(image.std()) > 0.01


@pytest.mark.parametrize(
    "name, shape",
    [
        ("00000001_000.png", (1, 512, 512)),  # 8-bit gray PNG
        ("h0001.png", (1, 512, 512)),  # RGB PNG
        ("16747_3_1.jpg", (1, 885, 1036)),  # RGB JPEG
        ("covid-19-pneumonia-58-prior.jpg", (1, 2373, 2373)),  # large JPEG
        ("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", (1, 1024, 1024)),  # DICOM
    ],
)
def test_real_sample_formats(shared_data, name, shape):
    path = shared_data / "xrv-samples" / name
    _check(read_image(path), shape)
    _check(read_image(path, size=64), (1, 64, 64))


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40]], dtype=np.uint8)
LUMA = COLOURS.astype(np.float64) @ [0.299, 0.587, 0.114] / 255  # ITU-R 601-2, computed by hand: red 0.299, green 0.587, blue 0.114


def _colour_blocks(block: int = 16) -> np.ndarray:
    """(block, 4·block, 3): one uniform block per colour of ``COLOURS``."""
    return np.repeat(np.repeat(COLOURS[None], block, axis=0), block, axis=1)


@pytest.mark.parametrize("name, mode, tolerance", [("rgb.png", "RGB", 0.6 / 255), ("rgba.png", "RGBA", 0.6 / 255), ("rgb.jpg", "RGB", 4 / 255)])
def test_colour_images_become_luminance(tmp_path, name, mode, tolerance):
    """Without ../shared: colour PNG/JPEG decode to 0.299 R + 0.587 G + 0.114 B (PIL rounds to 8 bits; JPEG is lossy)."""
    from PIL import Image

    pixels = _colour_blocks()
    image = Image.fromarray(pixels, "RGB")
    if mode == "RGBA":
        image.putalpha(128)  # alpha is dropped, not blended
    image.save(tmp_path / name, **({"quality": 100, "subsampling": 0} if name.endswith(".jpg") else {}))
    gray = read_image(tmp_path / name)
    assert gray.shape == (1, 16, 64)
    centres = gray[0, 8, 8::16].double().numpy()
    assert np.allclose(centres, LUMA, atol=tolerance), (centres, LUMA)


def test_rgb_dicom_becomes_luminance(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = _colour_blocks(4)
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    gray = read_image(tmp_path / "rgb.dcm")
    assert gray.shape == (1, 4, 16) and np.allclose(gray[0, 2, 2::4].double().numpy(), LUMA, atol=1e-6)


def test_8bit_png_values_are_exact(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert torch.equal(read_image(tmp_path / "a.png")[0], torch.from_numpy(pixels.astype(np.float32) / 255))


def test_16bit_png_uses_full_depth(tmp_path):
    pixels = np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")[0].numpy()
    assert np.allclose(image, pixels / 65535.0, atol=1e-6)
    assert len(np.unique(image)) > 256  # more levels than 8 bits could hold


def _write_dicom(path, pixels: np.ndarray, photometric: str, bits: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_monochrome1_is_inverted_with_full_bit_depth(tmp_path):
    pixels = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # 12-bit ramp
    _write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2", 12)
    _write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", 12)
    mono2, mono1 = read_image(tmp_path / "m2.dcm")[0].numpy(), read_image(tmp_path / "m1.dcm")[0].numpy()
    assert np.allclose(mono2, pixels / 4095.0, atol=1e-6)
    assert np.allclose(mono1, 1.0 - pixels / 4095.0, atol=1e-6)


def test_resize_keeps_aspect_and_crops_the_centre():
    image = torch.zeros(1, 40, 80)
    image[:, :, 16:64] = 1.0  # a bright centre band (wider than the crop), dark side bands that the crop drops
    out = resize_center_crop(image, 20)
    assert out.shape == (1, 20, 20) and float(out.min()) > 0.99


def test_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="image not found: .*nope.png"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("name, payload", [("bad.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"), ("bad.png", b"garbage"), ("bad.dcm", b"\0" * 128 + b"DICM" + b"\x01" * 50)])
def test_corrupt_file_names_it(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(BadImageError, match=f"cannot decode image .*{name}"):
        read_image(tmp_path / name)


def test_truncated_jpeg_is_a_bad_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
