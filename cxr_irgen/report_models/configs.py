"""The report-model YAMLs: ``configs/report_models/<group>/<name>.yaml`` (group ``encoder``, ``decoder`` or ``clip``)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cxr_irgen.utils.registry import config_text


def report_model_config(group: str, name: str, overrides: dict | DictConfig | None = None) -> DictConfig:
    """``configs/report_models/<group>/<name>.yaml`` merged with ``overrides``; a UserError lists the names."""
    return OmegaConf.merge(OmegaConf.create(config_text(f"report_models/{group}", name)), overrides or {})
