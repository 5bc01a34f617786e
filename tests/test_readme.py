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


def test_readme_results_table_quotes_the_published_board():
    """Every row of the README's headline table is the published 2025 full board's row, to the digit: score, CI, mean
    rank, capability kept, latents changed per token and the concepts whose top latents are aligned (CI above 0)."""
    import json

    from saebasis.experiments.preregistered import aligned  # the readings' count of aligned concepts (CI above 0)

    board = json.loads((ROOT / "docs" / "results" / "leaderboard_full-2025.json").read_text())
    overall = {r["method"]: r for r in board["overall"]}
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(
        r"^\| (\w+) \| (\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\] \| (\d+\.\d{2}) \| ([\d.]+|–) \| ([\d.]+|–) \| "
        r"(\d+ / \d+|–) \|$",
        readme,
        re.MULTILINE,
    )
    assert len(rows) >= 10, "the README's results table is missing or changed shape"
    for method, score, low, high, rank, kept, latents, aligned_cell in rows:
        r, costs = overall[method], board["costs"][method]
        assert (score, low, high, rank) == (
            f"{r['mean_score']:.3f}",
            f"{r['ci_low']:.3f}",
            f"{r['ci_high']:.3f}",
            f"{r['mean_rank']:.2f}",
        ), method
        assert kept == ("–" if costs.get("capability_kept") is None else f"{costs['capability_kept']:.3f}"), method
        assert latents == ("–" if costs.get("latent_l0") is None else f"{costs['latent_l0']:.1f}"), method
        hits, read, _ = aligned(board["readability"], method)
        assert aligned_cell == (f"{hits} / {read}" if read else "–"), method


def test_readme_and_docs_links_resolve():
    """Relative links in the README point to files that exist (the docs site checks its own with --strict)."""
    readme = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in link]
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
