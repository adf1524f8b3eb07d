"""Fetch every pretrained part a recipe needs into one folder, with ``manifest.json``; run on a connected machine.

    python scripts/fetch_weights.py --recipe paper-unet --out /data/models
    # carry /data/models to the offline server, then there:
    cxr-irgen check-weights weights.root=/models

Recipes (``cxr_irgen.weights.RECIPES``): ``paper-unet`` (SD v1.4 unet/vae/text_encoder/tokenizer, CLIP ViT-L/14,
bart-base, XRV DenseNet-121, Inception and RAD-DINO for FID), ``paper-uvit`` (+ U-ViT-L/2), ``eval-only`` (XRV, Inception, RAD-DINO),
``all`` (+ CLIP ViT-B/32, CheXbert + bert-base-uncased, the report generators' ImageNet encoders).

Each part is downloaded into ``<out>/.staging/<part>`` (Hugging Face ``snapshot_download`` or plain HTTP with
range requests, both with progress bars), then installed into its place in the tree (XRV's pickled model is
converted to a safetensors state dict there) and recorded in the manifest, which is rewritten after every part.
Rerunning skips parts already recorded and intact and resumes partial downloads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from cxr_irgen.errors import UserError
from cxr_irgen.weights import MANIFEST, PARTS, RECIPES, Part, manifest_entries, read_manifest, verify_files, write_manifest

STAGING = ".staging"
XRV = "xrv-densenet121-res224-all"


# ---------------------------------------------------------------- network (thin; not exercised by the tests)

def http_get(url: str, out: Path) -> Path:
    """Download ``url`` to ``out``, resuming ``out.part`` with a range request; a tqdm progress bar."""
    import urllib.request

    from tqdm import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request) as response:
        if response.status != 206:
            done = 0
        total = done + int(response.headers.get("Content-Length") or 0)
        with open(partial, "ab" if done else "wb") as f, tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc=out.name) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(partial, out)
    return out


def download(part: Part, staging: Path, urls: dict[str, str]) -> Path:
    """The part's files in ``staging`` (a folder for folder parts, the file for single-file parts)."""
    kind, _, where = part.source.partition(":")
    target = staging / part.name
    if kind == "hf":
        from huggingface_hub import snapshot_download

        patterns = list(part.patterns) or [Path(part.path).name]
        folder = Path(snapshot_download(where, allow_patterns=patterns, local_dir=str(target)))
        return folder if part.patterns else folder / Path(part.path).name
    url = urls.get(part.name) or where
    if not url.startswith(("http://", "https://")):
        raise UserError(f"{part.name}: no direct address ({where}); pass it with --uvit-url URL")
    return http_get(url, target / Path(url).name)


# ---------------------------------------------------------------- save / convert (tested)

def convert_xrv(source: Path, out: Path) -> Path:
    """torchxrayvision's release file (a whole pickled DenseNet) → a safetensors state dict that
    ``eval.xrv_weights`` loads strictly. Unpickling runs code from the file, which is why it happens here,
    once, on the connected machine, for the official release file; the server only ever reads safetensors."""
    import torch
    import torchxrayvision  # noqa: F401  (the pickle names its classes)
    from safetensors.torch import save_file

    from cxr_irgen.eval.features import xrv_densenet

    saved = torch.load(source, map_location="cpu", weights_only=False)
    if isinstance(saved, torch.nn.Module):
        for module in saved.modules():  # modules pickled by old torch versions lack this attribute
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        saved = saved.state_dict()
    if not isinstance(saved, dict):
        raise UserError(f"{source} holds a {type(saved).__name__}, neither a DenseNet nor a state dict")
    state = {k: v.detach().contiguous() for k, v in saved.items() if k != "op_threshs" and v is not None}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".partial-{out.name}")
    try:
        save_file(state, str(tmp), metadata={"converted_from": source.name})
        xrv_densenet(tmp)  # the strict load eval.xrv_weights does; raises naming the keys when it does not fit
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def install(part: Part, staged: Path, root: Path) -> list[str]:
    """Move (or convert) what was staged into the part's place under ``root``; returns the files, relative to ``root``."""
    destination = root / part.path
    if part.name == XRV:
        convert_xrv(staged, destination)
        return [part.path]
    if part.is_file:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if staged.resolve() != destination.resolve():
            shutil.move(str(staged), str(destination))
        return [part.path]
    files = []
    for path in sorted(p for p in staged.rglob("*") if p.is_file() and ".cache" not in p.relative_to(staged).parts):
        relative = path.relative_to(staged).as_posix()
        if part.wanted(relative):
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(destination / relative))
            files.append(f"{part.path}/{relative}")
    absent = [rel for rel in part.required_files() if rel not in files]
    if absent:
        raise UserError(f"{part.name}: {part.source} did not provide {', '.join(absent)}")
    return files


def record(root: Path, part: Part, files: list[str], source: str | None = None) -> None:
    """Replace the part's rows of ``manifest.json`` with the hashes of ``files`` (``source``: where they came from, if not ``part.source``)."""
    entries = read_manifest(root) if (root / MANIFEST).is_file() else []
    write_manifest(root, [e for e in entries if e["part"] != part.name] + manifest_entries(root, part, files, source))


def is_installed(root: Path, name: str) -> bool:
    if not (root / MANIFEST).is_file():
        return False
    return not verify_files(root, read_manifest(root), [name], hashes=False)[name]


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=list(RECIPES), default="paper-unet")
    parser.add_argument("--out", required=True, type=Path, help="the folder to fill (weights.root on the server)")
    parser.add_argument("--uvit-url", default=None, help="address of imagenet256_uvit_large.pth (see github.com/baofff/U-ViT's README)")
    args = parser.parse_args(argv)

    root = args.out
    root.mkdir(parents=True, exist_ok=True)
    urls = {"uvit-l2": args.uvit_url} if args.uvit_url else {}
    failed = []
    for name in RECIPES[args.recipe]:
        part = PARTS[name]
        if is_installed(root, name):
            print(f"{name}: already in {root}", flush=True)
            continue
        print(f"{name}: from {part.source} ({part.licence})", flush=True)
        try:
            placed = name == "uvit-l2" and not args.uvit_url and (root / part.path).is_file()  # put there by hand
            staged = root / part.path if placed else download(part, root / STAGING, urls)
            source = "placed by hand" if placed else f"url:{urls[name]}" if name in urls else None
            record(root, part, install(part, staged, root), source)
        except Exception as err:  # hub, network and conversion errors come in many types; the next run retries the part
            print(f"{name}: FAILED: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
            failed.append(name)
    if not failed:
        shutil.rmtree(root / STAGING, ignore_errors=True)
        print(f"done: {root} holds recipe {args.recipe}; on the server: cxr-irgen check-weights weights.root=<its path there>")
        return 0
    print(f"incomplete ({', '.join(failed)}); rerun the same command to resume", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
