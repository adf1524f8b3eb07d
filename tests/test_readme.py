"""Every command of README.md and of the docs/ pages runs as written, and every relative link resolves.

Each ```bash block's commands are run in-process through the CLI entry point, README first (its quick
start makes the runs), then each docs/*.md page in name order, reusing those runs: the placeholders
(`<run>`, `...`, `data/phantoms`) are replaced by the runs the earlier commands made, and tiny-model
overrides are appended (Hydra's last value wins). Commands that need MIMIC-CXR, pretrained weights,
several GPUs, a fresh virtualenv or an hour of CPU are skipped with that reason; each of those has a
test elsewhere named in the reason where one exists.

Links: every relative link of README.md and docs/*.md names an existing file, and an anchor names a
heading of the target page under GitHub's rules (lower case, spaces to '-', punctuation dropped).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from vision_helpers import one_thread  # noqa: F401  (autouse fixture)

from cxr_irgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

TINY = {
    "make-phantoms": ["n=40", "size=32"],
    "train-vision": ["trainer.max_steps=2", "trainer.batch_size=4", "max_images=24", "sample_every=0"],
    "train-language": ["trainer.max_steps=2", "trainer.batch_size=4", "trainer.checkpoint_every=2", "evaluation.max_reports=2",
                       "evaluation.max_length=8", "data.image_size=64"],
    "train-classifier": ["classifier.growth_rate=8", "classifier.block_config=[2,2,2]", "classifier.num_init_features=16", "resolution=32",
                         "trainer.max_steps=2", "trainer.batch_size=4", "protocol_n=10"],
    "generate": ["vision.scheduler=ddim", "vision.steps=2", "language.max_length=8", "batch_size=4"],
    "evaluate": ["eval.real.n=8", "eval.auroc.n=8", "eval.chexpert_f1.n_bootstrap=10", "eval.text.meteor=false", "eval.real.views=[PA,AP]",
                 "eval.kid.subsets=10", "eval.memorisation.n_train=16", "eval.utility.resolution=32", "eval.utility.n_bootstrap=10",
                 "eval.utility.classifier.growth_rate=8", "eval.utility.classifier.block_config=[2,2,2]",
                 "eval.utility.classifier.num_init_features=16", "eval.utility.trainer.max_steps=2", "eval.utility.trainer.batch_size=2",
                 "+eval.report_utility.encoder_args.image_size=32", "eval.report_utility.trainer.max_steps=2", "eval.report_utility.trainer.batch_size=2",
                 "eval.report_utility.max_test=4", "eval.report_utility.n_bootstrap=10", "eval.report_utility.decoding.max_length=8"],
}

SKIP = [  # (pattern, reason): the first match decides
    (r"^make ", "builds a fresh .venv; CI runs `make test`, tests/test_end_to_end.py runs the demo (reduced)"),
    (r"^(python|bash) benchmarks/", "a benchmark (minutes to hours); tests/test_gpu_suite.py runs the suite's dry run"),
    (r"^HF_HUB_OFFLINE=1 \S*python -m pytest", "runs tests: this is a test"),
    (r"<demo>", "needs a finished `make demo` run; tests/test_eval_utility.py runs the utility metric"),
    (r"data\.csv=/path", "needs your own CSV of images; tests/test_data_adapters.py reads one"),
    (r"^cxr-irgen demo", "tests/test_end_to_end.py runs the demo with reduced sizes"),
    (r"^accelerate launch", "needs several GPUs; 2-process CPU runs: tests/test_vision_train.py, tests/test_generate_cli.py"),
    (r"data=mimic|/data/mimic", "needs MIMIC-CXR-JPG (credentialed PhysioNet data)"),
    (r"experiment=paper_|unet-sd14|bart-base", "needs the pretrained SD v1.4 / BART weights and a GPU"),
    (r"train-report-|train_report_model|make-phantoms out=/tmp/ph",
     "paper-size report encoders (DenseNet-121, ConvNeXt-small, RN50x4) or the 30-min grid; tiny versions: tests/test_report_models_train.py, tests/test_report_models_learning.py"),
    (r"^python scripts/fetch_weights\.py", "downloads from the hub on a connected machine; its install/convert/manifest code: tests/test_weights.py"),
    (r"check-weights weights\.root=/models", "needs a fetched weights tree; tests/test_weights.py checks a tiny one"),
    (r"hydra\.run\.dir=runs/clf|prior\.input=classifier", "trains a classifier and a prior on its features; tests/test_language_held_out.py does"),
    (r"generated=(my_images|roentgen_out|assets/synthetic_images) |generated_reports=reports\.csv ",
     "runs as written in tests/test_eval_inputs.py on the layouts it writes (32 free-text phantoms, a tiny trained classifier)"),
    (r"^D=|\$D\b|\$\{D|^\{path:|compare-reports|train-label-encoder|train-repair",
     "the phantom comparison of every generator (about an hour of CPU, shell variables); tiny versions: tests/test_eval_compare_reports.py, "
     "tests/test_report_models_baselines.py, tests/test_report_models_repair.py"),
]


def page_commands(page: Path) -> list[str]:
    """The commands of every ```bash block of one page, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


COMMANDS = [(page.relative_to(ROOT).as_posix(), command) for page in PAGES for command in page_commands(page)]


@pytest.fixture(scope="module")
def runs(phantom_root, tmp_path_factory) -> dict[str, Path]:
    """The runs the README's commands make (filled as they run) and the inputs they name."""
    tmp = tmp_path_factory.mktemp("readme")
    from cxr_irgen.data.mimic import load_index

    table = load_index(phantom_root)
    folder = tmp / "some-folder"
    folder.mkdir()
    for path in table[(table["split"] == "test") & (table["view"] == "PA")]["image_path"].head(2):
        shutil.copy(path, folder)
    (tmp / "test_labels.csv").write_text('labels\n"Cardiomegaly=1"\n"No Finding=1"\n')
    (tmp / "reports.csv").write_text('report\n"Mild cardiomegaly. No pleural effusion."\n')
    return {"tmp": tmp, "images": folder}


def _substitute(command: str, runs: dict, phantom_root: Path) -> str:
    tmp = runs["tmp"]
    for placeholder, key in (("outputs/train_language/<prior run>", "prior"), ("outputs/train_language/<run>", "autoencoder"),
                             ("outputs/train_vision/<run>", "vision"), ("outputs/train_classifier/<run>", "classifier"),
                             ("outputs/generate/<run>", "generate"), ("vision.checkpoint=...", "vision"), ("language.checkpoint=...", "prior")):
        if placeholder in command:
            assert key in runs, f"the README uses {placeholder} before a command that makes it"
            value = runs[key] if "<" in placeholder else f"{placeholder[:-3]}{runs[key]}"
            command = command.replace(placeholder, str(value))
    return (command.replace("out=data/phantoms", f"out={tmp / 'made-phantoms'}").replace("data.root=data/phantoms", f"data.root={phantom_root}")
            .replace("labels_file=test_labels.csv", f"labels_file={tmp / 'test_labels.csv'}").replace("images_dir=some/folder", f"images_dir={runs['images']}")
            .replace("input=reports.csv", f"input={tmp / 'reports.csv'}").replace("output=labelled.csv", f"output={tmp / 'labelled.csv'}"))


def _record(argv: list[str], out: Path, runs: dict) -> None:
    name = argv[0]
    if name == "train-vision":
        runs["vision"] = out
    elif name == "train-language" and "stage=prior" in argv:
        runs["prior"] = out
    elif name == "train-language" and not any(a.startswith("data=") for a in argv):
        runs["autoencoder"] = out
    elif name == "train-classifier":
        runs["classifier"] = out
    elif name == "generate" and "mode=reports" not in argv:
        runs["generate"] = out


@pytest.mark.parametrize("number,page,command", [(i, page, command) for i, (page, command) in enumerate(COMMANDS)],
                         ids=[f"{i:02d}-{page}" for i, (page, _) in enumerate(COMMANDS)])
def test_readme_command_runs_as_written(number, page, command, runs, phantom_root, capsys):
    reason = next((why for pattern, why in SKIP if re.search(pattern, command)), None)
    if reason:
        pytest.skip(f"{command[:60]}...: {reason}")
    assert command.startswith("cxr-irgen "), f"{page}: {command}"
    argv = shlex.split(_substitute(command, runs, phantom_root))[1:]
    if argv == ["--help"]:
        main(argv)
        assert "train-vision" in capsys.readouterr().out
        return
    out = runs["tmp"] / f"{number:02d}-{argv[0]}"
    main([*argv, *TINY.get(argv[0], []), f"hydra.run.dir={out}"])
    _record(argv, out, runs)
    if argv[0] == "evaluate":
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["fid"]["n_generated"] > 0 and "random_weights" not in metrics["fid"]
    if argv[0] == "generate" and "mode=reports" in argv:  # copies outside the phantom tree: thumbnails beside the gallery, a note on each card
        gallery = (out / "index.html").read_text()
        assert gallery.count('src="thumbs/') == 2 and gallery.count("trained on procedural phantoms") == 3


def test_every_readme_command_is_listed():
    readme = page_commands(README)
    assert len(readme) >= 10 and sum(c.startswith("cxr-irgen generate") for c in readme) >= 3
    assert len(COMMANDS) >= 40 and {page for page, _ in COMMANDS} >= {"docs/data.md", "docs/evaluation.md", "docs/paper-recipes.md"}


def github_anchor(heading: str) -> str:
    """GitHub's id of a heading: links and code marks dropped, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[`*]", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def without_code(text: str) -> str:
    """The Markdown outside fenced blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"(`+).+?\1", "", text)


def anchors(page: Path) -> set[str]:
    """Every heading id of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", re.sub(r"^```.*?^```[^\n]*$", "", page.read_text(), flags=re.S | re.M), flags=re.M):
        anchor = github_anchor(heading)
        ids.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)
        seen[anchor] = seen.get(anchor, 0) + 1
    return ids


def test_github_anchor_rules():
    assert github_anchor("The paper's claims on phantoms") == "the-papers-claims-on-phantoms"
    assert github_anchor("The encoder × decoder grid") == "the-encoder--decoder-grid"
    assert github_anchor("Config groups (`configs/`)") == "config-groups-configs"
    assert github_anchor("`make demo`") == "make-demo"


@pytest.mark.parametrize("page", PAGES, ids=[page.relative_to(ROOT).as_posix() for page in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", without_code(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_docs_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    readme = README.read_text()
    for page in PAGES[1:]:
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
            assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_readme_is_a_front_door():
    assert len(README.read_text().splitlines()) < 250


def python_api_block() -> str:
    """The one ```python block under the README's "## Python API" heading."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 1, f"## Python API holds {len(blocks)} python blocks, not one"
    return blocks[0]


def test_readme_python_api_block_runs_without_hydra(phantom_root, runs, tmp_path, monkeypatch, capsys):
    """The block runs as written on two tiny runs (paths in CXR_VISION_RUN / CXR_LANGUAGE_RUN, real images in CXR_REAL_IMAGES)."""
    from api_runs import tiny_pair_runs

    import cxr_irgen

    block = python_api_block()
    assert not re.search(r"hydra|omegaconf|compose\(", block, flags=re.I), "the Python API block must not need Hydra"
    used = set(re.findall(r"cxr_irgen\.(\w+)", re.sub(r"#.*|^from .*$", "", block, flags=re.M)))
    assert used <= set(cxr_irgen.__all__), f"the block uses names cxr_irgen does not export: {sorted(used - set(cxr_irgen.__all__))}"
    made = tiny_pair_runs(phantom_root, tmp_path / "runs")
    monkeypatch.setenv("CXR_VISION_RUN", str(made["vision"]))
    monkeypatch.setenv("CXR_LANGUAGE_RUN", str(made["prior"]))
    monkeypatch.setenv("CXR_REAL_IMAGES", str(runs["images"]))
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "readme_python_api"}
    exec(compile(block, f"{README}: ## Python API", "exec"), scope)
    printed = capsys.readouterr().out
    assert "torch.Size([4, 1, " in printed and "(4, 14)" in printed
    assert len(list((tmp_path / "api-demo").glob("pair*.png"))) == 4 and len(scope["reports"]) == 4
    assert scope["text"]["guards"] and scope["scores"]["diversity"]["n_pairs"] == 2  # two label vectors, two images each
