"""Where a command writes, and a run directory as the unit a later command reads or continues.

``cfg.run_dir`` when set (Python callers, the demo), else Hydra's run directory. A run saves
its resolved config as ``config.yaml`` (data roots made absolute, so later commands find the
data from anywhere). ``trainer.resume=latest`` in an existing run continues it with that
saved config: the config is never rewritten; explicit key overrides win and are recorded
in ``resumes.jsonl``; a config-group override that would change the saved model is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from cxr_irgen.errors import UserError

CONFIG_FILE = "config.yaml"
RESUMES_FILE = "resumes.jsonl"
_BOOKKEEPING = {".hydra", CONFIG_FILE}


def run_dir(cfg) -> Path:
    """The output directory of the current command run."""
    from hydra.core.hydra_config import HydraConfig

    explicit = cfg.get("run_dir") if cfg is not None else None
    if explicit:
        return Path(explicit)
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(os.getcwd())


def saved_config(run: str | Path):
    """The ``config.yaml`` a run saved (also found from a sub-folder such as ``<run>/model``), or None."""
    from omegaconf import OmegaConf

    run = Path(str(run))
    for folder in (run, run.parent):
        if (folder / CONFIG_FILE).is_file():
            return OmegaConf.load(folder / CONFIG_FILE)
    return None


def _resumes_in_place(cfg) -> bool:
    trainer = cfg.get("trainer") if cfg is not None else None
    return bool(trainer is not None and str(trainer.get("resume") or "") == "latest")


def check_resume(cfg, explicit_run_dir: str | None) -> None:
    """Refuse ``trainer.resume=latest`` that has nothing to continue (before any folder or model is made)."""
    from cxr_irgen.utils.checkpoint import CHECKPOINT_DIR, list_checkpoints

    if not _resumes_in_place(cfg):
        return
    target = cfg.get("run_dir") or explicit_run_dir
    if not target:
        raise UserError("trainer.resume=latest continues a run in place: add hydra.run.dir=RUN_DIR (the run to continue)")
    if not list_checkpoints(Path(target)):
        raise UserError(f"trainer.resume=latest: nothing to resume in {target} (no complete checkpoint under {Path(target) / CHECKPOINT_DIR})")


def leaves(node, prefix: str = "") -> dict[str, object]:
    """A nested dict flattened to ``{"a.b.c": value}``."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _package(group: str, option: str) -> str:
    """Where a group option's keys land: its ``# @package`` line, else the group path ('' for ``_global_``)."""
    from importlib.resources import files

    path = files("cxr_irgen.configs") / group / f"{option}.yaml"
    first = path.read_text().splitlines()[0] if path.is_file() else ""
    package = first.split("@package", 1)[1].strip() if "@package" in first else group.replace("/", ".")
    return "" if package == "_global_" else package


def _resumed_config(cfg, out: Path, overrides: list[str]):
    """The saved config of ``out`` with the explicit key overrides applied; refuses group overrides that change it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    saved = OmegaConf.load(out / CONFIG_FILE)
    parsed = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.key_or_group.startswith("hydra")]
    keys = [o for o in parsed if not is_config_group(o.key_or_group) and o.key_or_group not in ("trainer.resume", "run_dir")]
    for o in keys:
        OmegaConf.update(saved, o.key_or_group, o.value(), merge=False)
    groups = [o for o in parsed if is_config_group(o.key_or_group)]
    packages = [_package(o.key_or_group, str(o.value())) for o in groups]
    chosen, kept = leaves(OmegaConf.to_container(cfg, resolve=True)), leaves(OmegaConf.to_container(saved, resolve=True))
    changed = sorted(k for k in set(chosen) | set(kept) if k not in ("trainer.resume", "run_dir") and chosen.get(k) != kept.get(k)
                     and any(k == p or k.startswith(p + ".") or not p for p in packages))
    if changed:
        raise UserError(f"resume continues the saved config of {out}; {' '.join(o.input_line for o in groups)} would change "
                        f"{', '.join(changed[:3])}: drop the group override, or start a new run")
    saved.trainer.resume = "latest"
    saved.run_dir = cfg.get("run_dir")
    with open(out / RESUMES_FILE, "a") as fh:
        fh.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "overrides": [o.input_line for o in keys]}) + "\n")
    return saved


def is_config_group(key: str) -> bool:
    """Whether ``key`` names a config group (``data``, ``vision/model``, ...) rather than a config key."""
    from importlib.resources import files

    return (files("cxr_irgen.configs") / key).is_dir()


def start_run(cfg, overrides: list[str] | None = None):
    """Create the run directory and save the resolved config as ``config.yaml``; returns the config to run.

    In a run that resumes in place (``trainer.resume=latest`` and a saved ``config.yaml``) the saved
    config is returned (with ``overrides`` applied, see the module doc) and nothing is rewritten.
    """
    from omegaconf import OmegaConf

    out = run_dir(cfg)
    if _resumes_in_place(cfg) and (out / CONFIG_FILE).is_file():
        return _resumed_config(cfg, out, list(overrides or []))
    out.mkdir(parents=True, exist_ok=True)
    record = OmegaConf.to_container(cfg, resolve=True)
    root = (record.get("data") or {}).get("root") if isinstance(record.get("data"), dict) else None
    if root and Path(root).exists():
        record["data"]["root"] = str(Path(root).resolve())
    (out / CONFIG_FILE).write_text(OmegaConf.to_yaml(record))
    return cfg


def discard_empty_run(out: Path) -> None:
    """Remove a run folder that holds only bookkeeping (Hydra's files, the log, config.yaml): a refused run leaves nothing."""
    out = Path(out)
    if not out.is_dir():
        return
    for entry in out.rglob("*"):
        inside = entry.relative_to(out).parts
        if entry.is_file() and inside[0] not in _BOOKKEEPING and not (len(inside) == 1 and entry.suffix == ".log"):
            return
    shutil.rmtree(out, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in out.resolve().parents:  # Hydra's empty outputs/<command>/ folders under the working directory
        if parent == cwd or not parent.is_relative_to(cwd) or any(parent.iterdir()):
            break
        parent.rmdir()
