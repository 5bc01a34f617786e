import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    setup = [b.strip() for b in blocks[:2]]
    assert setup[0] == "bash scripts/setup.sh && .venv/bin/saebasis demo"
    assert setup[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_has_no_unfilled_placeholders():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\b(SAE_QUALITY_TABLE|DEMO_RESULTS|BENCH_SUMMARY|TODO|TBD)\b", readme)


def test_readme_is_at_most_10_kib():
    assert (ROOT / "README.md").stat().st_size <= 10_240


def test_readme_results_table_quotes_the_published_boards():
    """Every row of the README's headline table is the published fp32 and bf16 full boards' row, to the digit."""
    import json

    boards = [
        {r["method"]: r for r in json.loads((ROOT / "docs" / "results" / f"{name}.json").read_text())["overall"]}
        for name in ("leaderboard_full", "leaderboard_full_bf16")
    ]
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| (\w+) \| (\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\] \| (\d+\.\d{2}) \| "
        r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\] \| (\d+\.\d{2}) \|$",
        readme,
        re.MULTILINE,
    )
    assert len(rows) >= 8, "the README's results table is missing or changed shape"
    for method, *cells in rows:
        quoted = [(cells[4 * i], cells[4 * i + 1], cells[4 * i + 2], cells[4 * i + 3]) for i in range(2)]
        for board, (score, low, high, rank) in zip(boards, quoted):
            r = board[method]
            assert (score, low, high, rank) == (
                f"{r['mean_score']:.3f}",
                f"{r['ci_low']:.3f}",
                f"{r['ci_high']:.3f}",
                f"{r['mean_rank']:.2f}",
            ), method


def test_readme_and_docs_links_resolve():
    """Relative links in the README point to files that exist (the docs site checks its own with --strict)."""
    readme = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in link]
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
