"""Sphinx configuration of entclust's documentation: `make docs` builds it into build/docs with
warnings as errors. Sphinx because autodoc and napoleon are part of it (the API reference is
generated from the docstrings: numpydoc sections of the scikit-learn style estimators, Args and
Returns blocks of the functions), MyST so that the guides and benchmark tables stay Markdown."""
import entclust

project = "entclust"
author = "the entclust developers"
release = version = entclust.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = True
napoleon_use_rtype = False
html_theme = "alabaster"
html_title = f"entclust {release}"

SECTIONS = ("Parameters", "Attributes", "Other Parameters")
ENTRY = __import__("re").compile(r"^(\s*)([A-Za-z_][\w]*(?:, [A-Za-z_][\w]*)*) : (.*)$")


def numpydoc_entries(app, what, name, obj, options, lines):
    """The estimators' docstrings write ``name : description`` in their Parameters and Attributes
    sections (the description begins on the name's line, as scikit-learn's short entries do);
    numpydoc reads the text after the colon as a type. Move it to the next line, indented."""
    section, out = None, []
    for i, line in enumerate(lines):
        underline = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if underline:
            section = line.strip() if line.strip() in SECTIONS else None
            base = len(line) - len(line.lstrip())
        match = ENTRY.match(line) if section else None
        if match and len(match.group(1)) == base:
            out += [match.group(1) + match.group(2), match.group(1) + "    " + match.group(3)]
        else:
            out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", numpydoc_entries, priority=400)  # before napoleon (500)
