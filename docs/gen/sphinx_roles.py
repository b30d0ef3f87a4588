"""MkDocs hook: rmkit's docstrings cross-reference with Sphinx roles (``:class:`RewardModel```), which
mkdocstrings leaves as text before the code span; the API reference shows the code span alone."""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):(<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Drop the role name before each code span of the rendered page."""
    return ROLE.sub(r"\1", html)
