"""Modules stay readable in one sitting (style guide rule 1)."""

from .conftest import ROOT


def test_no_module_is_over_600_lines():
    long = {p.name: n for p in (ROOT / "src").rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
