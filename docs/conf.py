"""Sphinx configuration of the ffnumpy documentation site.

Build (README, "Documentation site"; docs/design.md says why Sphinx and myst-nb)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -c docs -b html . build/site

The source folder is the repository root, so the README, the pages in ``docs/``, the
notebooks and the committed result tables keep the relative links they have on a code host;
``include_patterns`` lets in only those files. The notebooks are executed while the site is
built (they are committed without outputs); ``FFNUMPY_QUICK=1`` in the environment runs them
in quick mode, as the tests do. Everything a page needs (MathJax and its fonts, the theme's
scripts and styles) is copied into the built site: nothing is loaded from the network.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# --- project ---
project = "ffnumpy"
author = "the ffnumpy authors"
copyright = "2026, the ffnumpy authors"  # noqa: A001 (Sphinx's name for it)

# --- sources: the README is the home page ---
root_doc = "README"
include_patterns = [
    "README.md",
    "docs/*.md",
    "notebooks/[0-9][0-9]_*.ipynb",  # every numbered lesson, however many there are
    "data_cache/results/*.md",       # the tables the results page cites
]
exclude_patterns = ["build", ".venv", "**/.ipynb_checkpoints", "**/*.nbconvert.ipynb"]

# pages that the README does not link in its text reach the navigation here, so that the
# README stays plain Markdown on a code host (a toctree there would show as a code block)
NAVIGATION = """

```{toctree}
:hidden:
:caption: Pages

docs/results
docs/speed
docs/cli
docs/choices
docs/datasets
docs/design
```

```{toctree}
:hidden:
:caption: Notebooks
:glob:

notebooks/*
```

```{toctree}
:hidden:
:caption: Result tables
:glob:

data_cache/results/*
```
"""


def add_navigation(app, docname, source):
    """Append the site's hidden tables of contents to the home page as it is read."""
    if docname == root_doc:
        source[0] += NAVIGATION


def add_index_page(app, exception):
    """Write ``index.html``, which sends a browser to the home page (``README.html``)."""
    if exception is None and app.builder.format == "html":
        Path(app.outdir, "index.html").write_text(
            '<!DOCTYPE html>\n<meta charset="utf-8">\n<title>ffnumpy</title>\n'
            '<meta http-equiv="refresh" content="0; url=README.html">\n'
            '<a href="README.html">ffnumpy</a>\n')


def setup(app):
    app.connect("source-read", add_navigation)
    app.connect("build-finished", add_index_page)


# --- extensions ---
extensions = [
    "myst_nb",                 # Markdown pages and executed notebooks
    "sphinx-mathjax-offline",  # MathJax 3 and its fonts copied into _static/
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # the notebooks write $$...$$ inside a paragraph, as Jupyter allows
myst_heading_anchors = 3  # `page.md#a-heading` links, as a code host slugs them
# a notebook may step from its title to a level-3 heading; that is style, not a broken page
suppress_warnings = ["myst.header"]

# --- notebooks: executed at build time, every cell, a failure fails the build ---
nb_execution_mode = "force"
nb_execution_timeout = 900  # notebook 07 in full mode: about 2 minutes on a 2-core CPU
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_ipywidgets_js = {}  # no widget manager from a CDN; widgets show their static output
nb_merge_streams = True

# --- HTML ---
html_theme = "furo"
html_title = "ffnumpy"
html_static_path = []
html_show_sourcelink = False
html_copy_source = False
