"""``report.html``: one self-contained page of an evaluation, from the figures of ``metrics.json``, the lines of
``scores.jsonl`` and the rows' texts (:func:`page`). The script (``page.js``) and the style (``page.css``)
beside this module are hand-written and inlined in the page, so it opens from disk with no network; the data is
JSON in a ``<script type="application/json">`` element, escaped so that no text of the data can end it."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

# What JSON leaves as is but an HTML parser reads inside <script>: "</script>", "<!--", and the two line
# separators that older JavaScript parsers took for line ends.
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embedded_json(value: Any) -> str:
    """``value`` as JSON that can sit inside ``<script type="application/json">`` whatever its strings hold
    (``JSON.parse`` of the element's text gives ``value`` back)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for c, escaped in _ESCAPES.items():
        text = text.replace(c, escaped)
    return text


def columns(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Lines of ``scores.jsonl`` as ``{"keys": [...], "rows": [[...], ...]}``: each key once, not once a line
    (a key a line lacks is null)."""
    rows = list(lines)
    keys = list(dict.fromkeys(k for line in rows for k in line))
    return {"keys": keys, "rows": [[line.get(k) for k in keys] for line in rows]}


def page(
    metrics: dict[str, Any],
    lines: Iterable[dict[str, Any]],
    texts: dict[str, list[Any]],
    note: str | None = None,
    images: list[str] | None = None,
) -> str:
    """The HTML of ``report.html``.

    ``metrics`` is what ``metrics.json`` holds (every figure the page shows is read from it); ``lines`` the
    lines of ``scores.jsonl``; ``texts`` maps ``"<data>#<row>"`` to ``[prompt, [answer, ...]]`` (the answers
    of a pair, a suite row's candidates, a solution's steps, a prompt's rated responses); ``note`` says why
    texts are missing, when they are; ``images`` the data URLs of the thumbnails that a row's third item of
    ``texts`` points to (``[[index or None, name], ...]``).
    """
    data = {"metrics": metrics, "lines": columns(lines), "texts": texts, "note": note, "images": images or []}
    folder = resources.files(__name__)
    script, style = (folder / "page.js").read_text("utf-8"), (folder / "page.css").read_text("utf-8")
    title = html.escape(metrics.get("suite", {}).get("title") or "Reward model evaluation")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
        f'<style>\n{style}</style>\n</head>\n<body>\n<main id="page"><h1>{title}</h1></main>\n'
        f'<script type="application/json" id="rmkit-data">{embedded_json(data)}</script>\n'
        f"<script>\n{script}</script>\n</body>\n</html>\n"
    )
