"""One registry per model family (timm/open_clip style): builders register under a name as their modules
are imported; configs are one YAML per model in the packaged ``configs/``.

    BACKBONES = Registry("vision backbone")

    @BACKBONES.register("unet")
    def build_unet(cfg, cond_dim, num_tokens): ...

    BACKBONES.get("unet")      # the builder; an unknown name raises a UserError listing the known ones
    BACKBONES.names()          # ["unet", ...]

A registry is filled once, at import of the modules that define its builders, and never changed later.
"""

from __future__ import annotations

from importlib import resources
from typing import Callable, TypeVar

from cxr_irgen.errors import UserError

Builder = TypeVar("Builder", bound=Callable)
CONFIG_PACKAGE = "cxr_irgen.configs"


class Registry:
    """Names → builders (classes or functions) of one model family; ``aliases`` maps old recorded names to current ones."""

    def __init__(self, family: str, aliases: dict[str, str] | None = None):
        self.family = family
        self.aliases = dict(aliases or {})
        self._builders: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """Decorator: ``name`` builds with the decorated class or function (a name registers once)."""

        def add(builder: Builder) -> Builder:
            if name in self._builders or name in self.aliases:
                raise ValueError(f"{self.family} {name!r} is registered twice ({self._builders.get(name)} and {builder})")
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> Callable:
        """The builder of ``name`` (or of the name it is an alias of)."""
        name = self.aliases.get(name, name)
        if name not in self._builders:
            raise UserError(f"unknown {self.family} {name!r}: use one of {', '.join(self.names())}")
        return self._builders[name]

    def names(self) -> list[str]:
        """The registered names, sorted (aliases left out)."""
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return self.aliases.get(name, name) in self._builders


def config_names(folder: str) -> list[str]:
    """Sorted names of the ``*.yaml`` files in ``configs/<folder>/`` (e.g. ``report_models/encoder``)."""
    directory = resources.files(CONFIG_PACKAGE).joinpath(*folder.split("/"))
    return sorted(p.name[: -len(".yaml")] for p in directory.iterdir() if p.name.endswith(".yaml"))


def config_text(folder: str, name: str) -> str:
    """The text of ``configs/<folder>/<name>.yaml``; a UserError lists the names when there is none."""
    names = config_names(folder)
    if name not in names:
        raise UserError(f"{folder.rsplit('/', 1)[-1]}={name!r}: use one of {', '.join(names)}")
    return resources.files(CONFIG_PACKAGE).joinpath(*folder.split("/"), f"{name}.yaml").read_text()
