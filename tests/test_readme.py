import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    setup = [b.strip() for b in blocks[:2]]
    assert setup[0] == "bash scripts/setup.sh && .venv/bin/saebasis demo"
    assert setup[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_has_no_unfilled_placeholders():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\b(SAE_QUALITY_TABLE|DEMO_RESULTS|BENCH_SUMMARY|TODO|TBD)\b", readme)
