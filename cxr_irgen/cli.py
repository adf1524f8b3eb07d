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
from pathlib import Path

from cxr_irgen.errors import UserError

CONFIG_MODULE = "cxr_irgen.configs"


@dataclass(frozen=True)
class Command:
    name: str
    config: str
    target: str
    summary: str
    check: str | None = None  # "module:fn" validating the composed config before any model loads or folder is made
    reads_data: bool = False  # data.root / data.csv must exist before the run starts


COMMANDS = {
    c.name: c
    for c in (
        Command("demo", "demo", "cxr_irgen.demo:run", "Main job on the embedded phantom data: phantoms -> train -> generate -> evaluate"),
        Command("make-phantoms", "make_phantoms", "cxr_irgen.data.phantoms:run", "Write a procedural phantom dataset in the MIMIC-CXR-JPG layout"),
        Command("prepare-data", "prepare_data", "cxr_irgen.prepare:run", "Index a MIMIC-CXR-JPG tree (or phantoms), cache the table, log the selections", reads_data=True),
        Command("train-vision", "train_vision", "cxr_irgen.vision.train:run", "Fine-tune the diffusion backbone (U-Net or U-ViT) on text + reference-image conditions", reads_data=True),
        Command("train-language", "train_language", "cxr_irgen.language.train:run", "Train the BART autoencoder (stage=autoencoder) or the ViT prior (stage=prior)", reads_data=True),
        Command("generate", "generate", "cxr_irgen.generate:run", "Generate image-report pairs for label vectors (--labels ... or labels_file=...)",
                "cxr_irgen.generate:check"),
        Command("evaluate", "evaluate", "cxr_irgen.eval.evaluate:run", "Score generated images/reports: FID, PSNR/SSIM, AUROC, BLEU/ROUGE/CIDEr, CheXpert F1",
                "cxr_irgen.eval.evaluate:check"),
        Command("label-reports", "label_reports", "cxr_irgen.text.labeler:run", "Label free-text reports with the in-house CheXpert labeler (CSV in, CSV out)"),
        Command("train-classifier", "train_classifier", "cxr_irgen.eval.classifier:run", "Train an XRV-architecture DenseNet classifier for the AUROC protocol", reads_data=True),
        Command("check-weights", "check_weights", "cxr_irgen.weights:run", "Check a weights folder (weights.root=DIR from scripts/fetch_weights.py): manifest, configs, ready recipes"),
        Command("train-report-encoder", "train_report_encoder", "cxr_irgen.report_models.encoder_train:run", "Pre-train a frozen encoder of the report study: FVE classifiers, CVE CLIP or CCVE cluster CLIP", reads_data=True),
        Command("train-report-model", "train_report_model", "cxr_irgen.report_models.train:run", "Train an image encoder x report decoder (DVE/FVE/CVE/CCVE x Transformer/M2/CNN-RNN-RNN)", reads_data=True),
        Command("train-repair", "train_repair", "cxr_irgen.report_models.repair:run", "CXR-RePaiR: fine-tune CLIP on image-impression pairs and index the corpus for retrieval", reads_data=True),
        Command("train-label-encoder", "train_label_encoder", "cxr_irgen.report_models.m2trans:run", "Pre-train an image encoder on 14 CheXpert labels x 3 classes (M2Trans's DenseNet-121)", reads_data=True),
        Command("train-report-scst", "train_report_scst", "cxr_irgen.report_models.scst:run", "Self-critical fine-tuning of a report model with a labeler-F1 or BERTScore reward", reads_data=True),
        Command("compare-reports", "compare_reports", "cxr_irgen.eval.compare_reports:run", "One table (paper Tab. 3/4) of report generators on the same test images"),
        Command("compare-images", "compare_images", "cxr_irgen.eval.compare_images:run", "Two or more generated image sets vs the same real images: FID/KID/AUROC with paired bootstraps",
                "cxr_irgen.eval.compare_images:check"),
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
    lines += ["", "Every command is a Hydra app: `cxr-irgen COMMAND --help` shows the config groups it uses and its config."]
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


def _key_of(override: str) -> str:
    return override.lstrip("~+").split("=", 1)[0]


def _flat_keys(cfg) -> list[str]:
    from omegaconf import OmegaConf

    from cxr_irgen.utils.rundir import leaves

    return list(leaves(OmegaConf.to_container(cfg)))


def _unknown_key(command: Command, key: str, overrides: list[str]) -> UserError:
    """One line naming the unknown key and the closest keys of the command's config."""
    import difflib

    others = [o for o in overrides if _key_of(o) != key]
    try:
        keys = _flat_keys(_compose(command, others))
    except UserError:
        keys = _flat_keys(_compose(command, []))
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.75)
    hint = f"did you mean {' or '.join(close)}?" if close else f"`cxr-irgen {command.name} --cfg job` lists the keys"
    return UserError(f"unknown config key {key!r} (nothing reads it); {hint}")


def _compose(command: Command, overrides: list[str], with_hydra: bool = False):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            return compose(command.config, overrides=overrides, return_hydra_config=with_hydra)
    except Exception as err:  # Hydra/OmegaConf composition errors
        message = " ".join(str(err).split())
        if cause := err.__cause__:
            message += " " + " ".join(str(cause).split())
        raise UserError(message.split(" Config search path:")[0]) from None
    finally:
        GlobalHydra.instance().clear()


def _check_overrides(command: Command, overrides: list[str]):
    """Compose the config once up front so a bad override fails as one line, not Hydra's report; returns it.

    An unknown key (also one added with ``+key=``, which nothing would read, except under a ``*_args`` mapping of
    keyword arguments) names the closest valid keys. With
    ``weights.root`` set, the pretrained parts the command will load are checked here, before any run dir exists.
    """
    import re

    from cxr_irgen.utils.rundir import is_config_group
    from cxr_irgen.weights import require_weights

    try:
        cfg = _compose(command, overrides)
    except UserError as err:
        found = re.search(r"Could not override '([^']+)'", str(err)) or re.search(r"Key '[^']+' is not in struct full_key: (\S+)", str(err))
        if found:
            raise _unknown_key(command, found.group(1), overrides) from None
        raise
    for override in overrides:
        key = _key_of(override)
        passes_through = key.rpartition(".")[0].endswith("_args")  # ``encoder_args``: keyword arguments handed on as they are
        if override.startswith("+") and not override.startswith("++") and not key.startswith("hydra.") and not is_config_group(key) and not passes_through:
            raise _unknown_key(command, key, overrides)
    require_weights(cfg)
    return cfg


def _fragments() -> set[str]:
    """Config files that other configs pull in through their defaults list (``vision/model/base``): not options to pick."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    root = Path(str(files(CONFIG_MODULE)))
    included, chosen = set(), set()
    for path in root.rglob("*.yaml"):
        group = path.parent.relative_to(root).as_posix()
        for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_":
                name = entry.split("@")[0]
                included.add(name if "/" in name or group == "." else f"{group}/{name}")
            elif isinstance(entry, dict):
                chosen.update(f"{key.split('@')[0]}/{value}" for key, value in entry.items() if value)
    return included - chosen


def command_help(command: Command, overrides: list[str]) -> str:
    """``cxr-irgen COMMAND --help``: the config groups this command uses (with their options) and its resolved config."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    runtime = _compose(command, overrides, with_hydra=True).hydra.runtime
    choices = {group: chosen for group, chosen in runtime.choices.items() if not group.startswith("hydra/")}
    lines = [f"cxr-irgen {command.name}: {command.summary}", "", "== Config groups (group=option) =="]
    fragments = _fragments()
    for group, chosen in sorted(choices.items()):
        folder = group.split("@")[0]  # ``trainer@eval.utility.trainer``: the trainer group placed under another key
        options = sorted(p.name[:-5] for p in (files(CONFIG_MODULE) / folder).iterdir() if p.name.endswith(".yaml") and f"{folder}/{p.name[:-5]}" not in fragments)
        lines.append(f"  {group}: {', '.join(options)}  (now: {chosen})")
    if not choices:
        lines.append("  (none)")
    lines += ["", "== Config ==", OmegaConf.to_yaml(_compose(command, overrides)).rstrip(), "",
              "Override any key with key=value (e.g. seed=1); --cfg job prints the config alone, --hydra-help Hydra's own flags."]
    return "\n".join(lines)


def check_data(cfg) -> None:
    """The data a command reads exists: ``data.root`` (MIMIC layout or phantoms) or ``data.csv``."""
    data = cfg.get("data")
    if data is None:
        return
    from omegaconf import OmegaConf

    for key in ("root", "csv"):
        if key in data.keys() and OmegaConf.is_missing(data, key):
            raise UserError(f"data={data.name} needs data.{key}=PATH")
        value = data.get(key)
        if value and not Path(str(value)).exists():
            hint = f" (or run `cxr-irgen make-phantoms out={value}`)" if str(data.name) == "phantom" else ""
            raise UserError(f"data.{key}={value}: not found (data={data.name}){hint}")


def _explicit_run_dir(overrides: list[str]) -> str | None:
    found = [o.split("=", 1)[1] for o in overrides if _key_of(o) == "hydra.run.dir"]
    return found[-1].strip("'\"") if found else None


def run_command(name: str, argv: list[str]) -> None:
    """Run one command in-process, as the console script would (used by tests and the demo).

    Before Hydra makes a run folder: the overrides compose, the command's own ``check`` passes
    (labels, paths, checkpoint kinds, ...) and a resume has something to continue. A user error
    raised later removes the run folder it made when nothing but bookkeeping is in it.
    """
    import hydra
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    from cxr_irgen.utils.rundir import check_resume, discard_empty_run, run_dir, start_run

    command = COMMANDS[name]
    argv = translate_flags(argv)
    wants_help = any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i") for a in argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    explicit_dir = _explicit_run_dir(overrides)
    fresh = explicit_dir is None or not Path(explicit_dir).exists()
    if any(a in ("--help", "-h") for a in argv):
        print(command_help(command, overrides))
        sys.exit(0)
    if not wants_help and not multirun:
        cfg = _check_overrides(command, overrides)
        check_resume(cfg, explicit_dir)
        resumes_in_place = not fresh and str(cfg.get("trainer", {}).get("resume") or "") == "latest"
        if command.reads_data and not resumes_in_place:  # a resumed run reads the data its saved config names
            check_data(cfg)
        if command.check:
            _load_task(command.check)(cfg)
        if resumes_in_place:
            argv = [*argv, "hydra.output_subdir=null"]  # the run's own files stay as they were

    def task(cfg: DictConfig) -> None:
        from cxr_irgen.weights import require_weights

        try:
            if multirun:  # single runs were checked before Hydra started
                require_weights(cfg)
            cfg = start_run(cfg, overrides)
            _load_task(command.target)(cfg)
        except (UserError, OmegaConfBaseException) as err:
            from cxr_irgen.data.imageio import BadImageError

            if fresh:
                discard_empty_run(run_dir(cfg))
            kind = "error" if isinstance(err, UserError) else "config error"
            message = str(err).splitlines()[0]
            if isinstance(err, BadImageError) and "skip_bad" not in message:
                message += "; set data.skip_bad=true to skip (and count) bad images"
            print(f"cxr-irgen {name}: {kind}: {message}", file=sys.stderr)
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
    finally:
        if "torch.distributed" in sys.modules:  # a command that started a process group (``accelerate launch``)
            from cxr_irgen.utils.device import close_process_group

            close_process_group()


if __name__ == "__main__":
    main()
