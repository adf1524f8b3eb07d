"""`cxr-irgen <command>`: one entry point; every command is a Hydra app over `configs/`.

Each command maps to a config file (``configs/<config>.yaml``) and a task function
``fn(cfg: DictConfig) -> None`` in the module that owns the work. User errors
(:class:`~cxr_irgen.errors.UserError`, bad overrides, missing values) print one line
and exit with status 2; no traceback.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from cxr_irgen.errors import UserError

CONFIG_MODULE = "cxr_irgen.configs"


@dataclass(frozen=True)
class Command:
    name: str
    config: str
    target: str
    summary: str


COMMANDS = {
    c.name: c
    for c in (
        Command("demo", "demo", "cxr_irgen.demo:run", "Main job on the embedded phantom data: phantoms -> train -> generate -> evaluate"),
        Command("make-phantoms", "make_phantoms", "cxr_irgen.data.phantoms:run", "Write a procedural phantom dataset in the MIMIC-CXR-JPG layout"),
        Command("prepare-data", "prepare_data", "cxr_irgen.data.prepare:run", "Index a MIMIC-CXR-JPG tree (or phantoms), cache the table, log the selections"),
        Command("train-vision", "train_vision", "cxr_irgen.vision.train:run", "Fine-tune the diffusion backbone (U-Net or U-ViT) on text + reference-image conditions"),
        Command("train-language", "train_language", "cxr_irgen.language.train:run", "Train the BART autoencoder (stage=autoencoder) or the ViT prior (stage=prior)"),
        Command("generate", "generate", "cxr_irgen.generate:run", "Generate image-report pairs for label vectors (--labels ... or labels_file=...)"),
        Command("evaluate", "evaluate", "cxr_irgen.eval.evaluate:run", "Score generated images/reports: FID, PSNR/SSIM, AUROC, BLEU/ROUGE/CIDEr, CheXpert F1"),
        Command("label-reports", "label_reports", "cxr_irgen.eval.labeler:run", "Label free-text reports with the in-house CheXpert labeler (CSV in, CSV out)"),
        Command("train-classifier", "train_classifier", "cxr_irgen.eval.classifier:run", "Train an XRV-architecture DenseNet classifier for the AUROC protocol"),
        Command("train-report-encoder", "train_report_encoder", "cxr_irgen.report_models.encoder_train:run", "Pre-train a frozen encoder of the report study: FVE classifiers, CVE CLIP or CCVE cluster CLIP"),
        Command("train-report-model", "train_report_model", "cxr_irgen.report_models.train:run", "Train an image encoder x report decoder (DVE/FVE/CVE/CCVE x Transformer/M2/CNN-RNN-RNN)"),
        Command("train-repair", "train_repair", "cxr_irgen.report_models.repair:run", "CXR-RePaiR: fine-tune CLIP on image-impression pairs and index the corpus for retrieval"),
        Command("train-label-encoder", "train_label_encoder", "cxr_irgen.report_models.m2trans:run", "Pre-train an image encoder on 14 CheXpert labels x 3 classes (M2Trans's DenseNet-121)"),
        Command("train-report-scst", "train_report_scst", "cxr_irgen.report_models.scst:run", "Self-critical fine-tuning of a report model with a labeler-F1 or BERTScore reward"),
        Command("compare-reports", "compare_reports", "cxr_irgen.eval.compare_reports:run", "One table (paper Tab. 3/4) of report generators on the same test images"),
    )
}

_HYDRA_FLAGS = {
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p",
    "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc", "--config-path", "-cp",
    "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i", "--experimental-rerun",
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: cxr-irgen <command> [key=value ...] [-m] [--help]", "", "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "Every command is a Hydra app: `cxr-irgen COMMAND --help` shows its config groups and options."]
    return "\n".join(lines)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def translate_flags(argv: list[str]) -> list[str]:
    """Turn convenience flags (``--labels "A=1, B=0" --n 4``) into Hydra overrides (``labels='A=1, B=0' n=4``)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and arg.split("=", 1)[0] not in _HYDRA_FLAGS:
            key, _, value = arg[2:].partition("=")
            if not _:
                if i + 1 >= len(argv):
                    raise UserError(f"flag {arg} needs a value")
                i += 1
                value = argv[i]
            out.append(f"{key.replace('-', '_')}={_quote(value)}")
        else:
            out.append(arg)
        i += 1
    return out


def _load_task(target: str):
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def _check_overrides(command: Command, overrides: list[str]) -> None:
    """Compose the config once up front so a bad override fails as one line, not Hydra's report."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            compose(command.config, overrides=overrides)
    except Exception as err:  # Hydra/OmegaConf composition errors
        raise UserError(" ".join(str(err).split())) from None
    finally:
        GlobalHydra.instance().clear()


def run_command(name: str, argv: list[str]) -> None:
    """Run one command in-process, as the console script would (used by tests and the demo)."""
    import hydra
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    command = COMMANDS[name]
    argv = translate_flags(argv)
    wants_help = any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i") for a in argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    if not wants_help and not multirun:
        _check_overrides(command, overrides)

    def task(cfg: DictConfig) -> None:
        from cxr_irgen.utils.rundir import start_run

        try:
            start_run(cfg)
            _load_task(command.target)(cfg)
        except UserError as err:
            print(f"cxr-irgen {name}: error: {err}", file=sys.stderr)
            sys.exit(2)
        except OmegaConfBaseException as err:
            print(f"cxr-irgen {name}: config error: {str(err).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)

    task.__module__ = command.target.partition(":")[0]
    saved = sys.argv
    sys.argv = [f"cxr-irgen {name}", f"hydra.job.name={command.config}", *argv]
    try:
        hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=command.config, version_base="1.3")(task)()
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"cxr-irgen: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    try:
        run_command(name, rest)
    except UserError as err:
        print(f"cxr-irgen {name}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
