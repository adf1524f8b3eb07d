"""Placeholder until its issue lands."""

from cxr_irgen.errors import UserError


def run(cfg) -> None:
    raise UserError("train-vision is not available yet in this version of cxr-irgen")
