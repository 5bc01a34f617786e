"""The documentation site builds with `mkdocs build --strict`: no broken link, no missing page or anchor, and the
API reference (mkdocstrings) resolves every object it names."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("Steering", "Steering.apply", "train", "fit", "load", "generate", "compare"):
        assert f'id="saebasis.api.{name}"' in api, f"the API reference lacks saebasis.api.{name}"


def test_every_docs_page_is_in_the_nav():
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
    found = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md") if "state" not in p.parts}
    assert found - listed == set(), f"docs pages missing from mkdocs.yml's nav: {sorted(found - listed)}"
    assert listed - found == set(), f"nav entries without a page: {sorted(listed - found)}"
