"""The documentation (issue 28): the README is a front page, every public name is in the API
reference, every page is reachable, and every local link of the README and the docs points at a
file that exists. `make docs` (CI) builds the site itself with warnings as errors."""
import pathlib
import re

import entclust

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "../shared" not in readme  # users have the docs, not the project's shared folder
    for command in ("make test", "make demo", "make docs"):
        assert command in readme


def test_every_public_name_is_in_the_api_reference():
    reference = (DOCS / "reference.md").read_text()
    documented, module = set(), None
    for line in reference.splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::")[1].strip()
        match = re.match(r"\.\. auto(?:function|class|data):: (\w+)", line)
        if match and module == "entclust":
            documented.add(match.group(1))
    assert set(entclust.__all__) <= documented, sorted(set(entclust.__all__) - documented)


def test_every_page_is_in_a_table_of_contents():
    index = (DOCS / "index.md").read_text()
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md")} - {"index"}
    listed = set(re.findall(r"^([\w/]+)$", index, flags=re.M))
    assert pages <= listed, sorted(pages - listed)


def test_local_links_point_at_files_that_exist():
    broken = []
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_maths_ships_with_the_docs_and_names_the_papers():
    maths = (DOCS / "maths.md").read_text()
    for text in ("Zhang & Boykov 2023a", "Mahon & Lukasiewicz 2021", "## Pseudo-label problems and solvers"):
        assert text in maths
    for page in DOCS.rglob("*.md"):
        assert "MATH.md" not in page.read_text(), page
