"""The README's result tables are generated from the committed results files and are current."""
from pathlib import Path

from experiments.readme_tables import DOCUMENTS, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_the_results_files():
    for path in DOCUMENTS:
        text = path.read_text()
        assert render(text) == text, f"{path}: run python -m experiments.readme_tables"


def test_render_replaces_only_between_markers():
    text = "before\n<!-- table:query_path -->\nold table\n<!-- /table:query_path -->\nafter\n"
    out = render(text)
    assert out.startswith("before\n<!-- table:query_path -->\n") and out.endswith("<!-- /table:query_path -->\nafter\n")
    assert "old table" not in out
