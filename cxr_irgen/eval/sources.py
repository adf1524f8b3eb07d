"""Images for the metrics, read on demand at one resolution, and the batched, rank-sharded map over them.

An image input is a folder (its images, sorted, recursively), a list of paths, or an array /
tensor (N, 1, H, W) or (N, H, W) in [0, 1]; :func:`as_images` turns any of them into a source
whose ``load(indices)`` returns (B, 1, S, S) float32 in [0, 1] (shorter side to S, centre crop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cxr_irgen.errors import UserError


def run_shard(fn: Callable[[list[int]], Sequence], n_items: int, batch_size: int, desc: str, state) -> dict[int, object]:
    """``fn`` over this rank's item indices (every world-th, from its rank) in batches: ``{index: result}``."""
    from cxr_irgen.utils.progress import progress_bar

    mine = list(range(state.process_index, n_items, state.num_processes))
    results: dict[int, object] = {}
    with progress_bar(total=len(mine), desc=desc, disable=not state.is_main_process, dynamic_ncols=True) as bar:
        for start in range(0, len(mine), batch_size):
            batch = mine[start:start + batch_size]
            results.update(zip(batch, fn(batch)))
            bar.update(len(batch))
    return results


def shard_map(fn: Callable[[list[int]], Sequence], n_items: int, batch_size: int, desc: str, state) -> list:
    """:func:`run_shard` on every rank, gathered: the results of all items in item order (on every rank)."""
    from accelerate.utils import gather_object

    results = run_shard(fn, n_items, batch_size, desc, state)
    if state.num_processes > 1:
        merged: dict[int, object] = {}
        for part in gather_object([results]):
            merged.update(part)
        results = merged
    return [results[i] for i in range(n_items)]


def process_state(state=None):
    """``state`` or accelerate's ``PartialState`` (CPU unless CUDA is there; without cpu=True CPU processes under torchrun would not shard)."""
    if state is not None:
        return state
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


class ImageSource:
    """Image files read at one resolution: ``load(indices)`` → (B, 1, S, S) in [0, 1]; ``paths`` names them."""

    def __init__(self, paths: Sequence[str], resolution: int):
        self.paths, self.resolution = [str(p) for p in paths], int(resolution)

    def __len__(self) -> int:
        return len(self.paths)

    def at(self, resolution: int) -> "ImageSource":
        return ImageSource(self.paths, resolution)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        from cxr_irgen.data.imageio import BadImageError, read_image
        from cxr_irgen.eval.image_metrics import check_unit_images

        images = []
        for i in indices:
            try:
                images.append(check_unit_images(read_image(self.paths[i], self.resolution), str(self.paths[i])))
            except BadImageError as err:
                raise UserError(f"{err}; set data.skip_bad=true to skip (and count) bad images") from None
            except ValueError as err:
                raise UserError(str(err)) from None
        return torch.stack(images)


class TensorSource:
    """Images held in memory, (N, 1, H, W) in [0, 1], served at one resolution like :class:`ImageSource`."""

    def __init__(self, images: torch.Tensor, resolution: int | None = None):
        from cxr_irgen.eval.image_metrics import check_unit_images

        try:
            self.images = check_unit_images(images.float(), "images")
        except ValueError as err:
            raise UserError(str(err)) from None
        self.resolution = int(resolution or images.shape[-1])
        self.paths = [f"image[{i}]" for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def at(self, resolution: int) -> "TensorSource":
        return TensorSource(self.images, resolution)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        from cxr_irgen.data.imageio import resize_center_crop

        return torch.stack([resize_center_crop(self.images[int(i)], self.resolution) for i in indices])


def image_paths(folder: str | Path) -> list[str]:
    """The image files under ``folder`` (recursively), sorted."""
    from cxr_irgen.eval.generated import IMAGE_SUFFIXES

    return [str(p) for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def as_images(images, resolution: int | None = None, what: str = "images") -> ImageSource | TensorSource:
    """A source for a folder, a list of paths, an array / tensor (N, 1, H, W) or (N, H, W) in [0, 1], or a source;
    at ``resolution`` (None: the first image's side)."""
    if isinstance(images, (ImageSource, TensorSource)):
        return images if resolution is None or resolution == images.resolution else images.at(resolution)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        tensor = torch.as_tensor(images)
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(1)
        if tensor.ndim != 4 or tensor.shape[1] != 1:
            raise UserError(f"{what}: need an array (N, 1, H, W) or (N, H, W) of gray images in [0, 1], got shape {tuple(tensor.shape)}")
        return TensorSource(tensor, resolution)
    if isinstance(images, (str, Path)):
        if not Path(images).is_dir():
            raise UserError(f"{what}={images}: no such folder")
        paths = image_paths(images)
        if not paths:
            raise UserError(f"{what}={images}: no images in it")
    else:
        paths = [str(p) for p in images]
    if not paths:
        raise UserError(f"{what}: no images")
    if resolution is None:
        from cxr_irgen.data.imageio import read_image

        resolution = read_image(paths[0]).shape[-1]
    return ImageSource(paths, resolution)
