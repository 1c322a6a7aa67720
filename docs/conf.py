"""Sphinx configuration for selfheal's documentation.

Why Sphinx with MyST and Furo: MkDocs itself has had no release since 2024-08, while
Sphinx, MyST-Parser and Furo are maintained and released regularly. MyST lets the pages
stay Markdown, readable on a forge as they are, and Sphinx checks every cross-reference
at build time. See about.md.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
tests/test_docs.py runs exactly that, with warnings as errors.
"""

from importlib.metadata import PackageNotFoundError, version as _version

project = "selfheal"
author = "selfheal contributors"
copyright = "selfheal contributors"
try:
    release = _version("selfheal")
except PackageNotFoundError:  # building from a checkout that is not installed
    release = "0"
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# Every heading down to ### gets a GitHub-style anchor, so `page.md#a-heading` links are
# checked: one to a page or an anchor that does not exist is a warning, and -W fails it.
myst_heading_anchors = 3
# Every reference must resolve.
nitpicky = True

html_theme = "furo"
html_title = "selfheal"
html_static_path: list[str] = []
pygments_style = "sphinx"
