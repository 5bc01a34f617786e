"""The documentation site builds with `mkdocs build --strict`: no broken link, no missing page or anchor, and the
API reference (mkdocstrings) resolves every object it names; every page is in the nav; no prose file narrates how the
project was developed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("Steering", "Steering.apply", "train", "fit", "load", "generate", "compare"):
        assert f'id="saebasis.api.{name}"' in api, f"the API reference lacks saebasis.api.{name}"


def test_every_docs_page_is_in_the_nav():
    """Every committed page is in the nav, and every nav entry is a committed page (the site CI builds)."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)
        elif isinstance(node, list):
            for v in node:
                yield from pages(v)

    listed = set(pages(config["nav"]))
    tracked = subprocess.run(["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = {f.removeprefix("docs/") for f in tracked.stdout.split() if f.endswith(".md") and (ROOT / f).is_file()}
    assert found - listed == set(), f"docs pages missing from mkdocs.yml's nav: {sorted(found - listed)}"
    assert listed - found == set(), f"nav entries without a page: {sorted(listed - found)}"


# What documentation, comments and docstrings may not contain: an account of how the project was developed
# (first person, sittings, whose work slowed a run, the development machine) or a machine path. Data files
# (concept JSONL, corpora, results JSON) are text the models read or wrote, not prose about the project.
NARRATION = re.compile(
    r"/work/|/root/|\bsittings?\b|\bsessions?\b|slowed by|\bmy own\b|\bI (?:ran|wrote|measured|tried|first)\b"
    r"|\bworkplace\b|\bwe (?:did|ran|measured|tried)\b",
    re.IGNORECASE,
)
PROSE = (".md", ".py", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".txt")


def test_no_file_narrates_how_the_project_was_developed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [
        f
        for f in tracked
        if f.endswith(PROSE)
        and not f.startswith("saebasis/data/")
        and f != "tests/test_docs.py"
        and (ROOT / f).is_file()
    ]
    assert len(files) > 50
    found = [
        f"{f}:{n}: {line.strip()[:100]}"
        for f in files
        for n, line in enumerate((ROOT / f).read_text(errors="replace").splitlines(), 1)
        if NARRATION.search(line) and 'scope="session"' not in line
    ]
    assert not found, "text that narrates development or names a machine path:\n" + "\n".join(found)


def test_architecture_page_lists_the_layers_the_import_test_enforces():
    from tests.test_architecture import LAYERS

    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| \d+ \| (.*) \|$", text, re.MULTILINE)
    listed = [tuple(re.findall(r"`(saebasis[\w.]*)`", cells)) for cells in rows]
    assert listed == [tuple(layer) for layer in LAYERS]


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """Every `saebasis <command> key=value ...` of the README and the docs -- a line of a bash block or an inline code
    span -- whose values are all real (no `<placeholder>` or `[optional part]`, no multirun, no line continuation):
    (page, command, overrides)."""
    import shlex

    from saebasis.cli import COMMANDS

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        lines = [ln for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL) for ln in block.splitlines()]
        lines += re.findall(r"(?<!`)`((?:\.venv/bin/)?saebasis [^`]+)`", text)
        for line in lines:
            line = line.split(" #")[0].strip()
            match = re.match(r"^(?:\.venv/bin/)?saebasis (\S+)(.*)$", line)
            if not match or match.group(1) not in COMMANDS or re.search(r"<|\\$| -m\b|\.\.\.| \[", line):
                continue
            found.append((str(page.relative_to(ROOT)), match.group(1), shlex.split(match.group(2))))
    return found


def test_every_documented_command_line_composes():
    """A renamed key, group or option breaks the documented command that uses it: each composes as the CLI would."""
    from saebasis.cli import COMMANDS
    from saebasis.config import compose

    lines = documented_commands()
    assert len(lines) >= 40 and {"README.md", "docs/cli.md", "docs/methods.md"} <= {page for page, _, _ in lines}
    for page, command, overrides in lines:
        try:
            compose(COMMANDS[command][0], overrides)
        except Exception as err:  # noqa: BLE001 -- named with its page and line below
            raise AssertionError(f"{page}: `saebasis {command} {' '.join(overrides)}` does not compose: {err}") from err


def test_the_width_table_quotes_the_width_comparison():
    """docs/results/readability.md's width table is the published comparison's figures, to the digit."""
    blob = json.loads((ROOT / "docs/results/readability_width-16384.json").read_text())
    page = (ROOT / "docs/results/readability.md").read_text()
    m = blob["methods"]
    for quality, side, name in zip(blob["quality"], ("a", "b"), ("4,096 (shipped)", "16,384")):
        row = (
            f"| {name} | {quality['explained_variance']:.3f} | {quality['l0']:.1f} | {quality['dead_fraction']:.1%} | "
            f"{quality['ce_loss_recovered']:.3f} | {blob['total'][f'aligned_{side}']} | "
            + " / ".join(
                f"{m[k][f'mean_diff_{side}']:+.3f}" for k in ("sae_bias", "sae_adaptor_sparse", "sae_adaptor_lowrank")
            )
            + " |"
        )
        assert row in page, row
    counts = ", ".join(
        f"{label} {m[k]['aligned_a']} -> {m[k]['aligned_b']}"
        for k, label in (("sae_bias", "the SAE bias"), ("sae_adaptor_sparse", "the sparse SAE adaptor"))
    )
    assert counts in " ".join(page.split())
    higher = sum(r["b_higher"] for r in m.values())
    assert f"higher on {higher} of the {blob['total']['concepts']} cells" in " ".join(page.split())
