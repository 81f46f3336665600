"""The README and docs/ as a reader uses them: their code examples run as written, and every
link leads to a file in the repository."""

import re

import pytest

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = re.compile(r"<!-- example -->\n```python\n(.*?)```", re.DOTALL)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def examples():
    return [pytest.param(page, code, id=f"{page.name}:{i}") for page in PAGES
            for i, code in enumerate(EXAMPLE.findall(page.read_text()))]


@pytest.mark.parametrize("page, code", examples())
def test_code_examples_run(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(page), "exec"), {})


def test_there_are_examples_in_the_readme_and_the_docs():
    names = {p.values[0].name for p in examples()}
    assert "README.md" in names and "karlo.md" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path = (page.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"
