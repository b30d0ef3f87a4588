"""The images of report.html: each row's images downscaled to a thumbnail and embedded as a ``data:`` URL, so the
page stays one file that loads nothing (its Content-Security-Policy allows images from ``data:`` only).

A thumbnail is at most :data:`SIDE` pixels on its longer side, a JPEG of quality :data:`QUALITY` (a few kB); an
image that several rows share is embedded once. The thumbnails of a page take at most :data:`BUDGET` bytes of
it: past that, a row's image is named (its path as the data file gave it) but not shown, and the page says how
many were left out.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

SIDE = 160  # pixels, the longer side of a thumbnail
QUALITY = 80  # JPEG quality
BUDGET = 8 * 2**20  # bytes of data URLs a page may hold


class Thumbnails:
    """Thumbnails of a page's images: :meth:`add` one, :attr:`urls` the data URLs, :meth:`note` what was left out."""

    def __init__(self, budget: int = BUDGET):
        self.budget, self.urls = budget, []
        self._seen: dict[str, int | None] = {}  # an image's pixels' digest -> its index (None: left out)
        self._size = 0

    @property
    def left_out(self) -> int:
        """How many distinct images the budget left out."""
        return sum(k is None for k in self._seen.values())

    def add(self, image: Any) -> int | None:
        """The index in :attr:`urls` of the thumbnail of ``image`` (a PIL image), or ``None`` over the budget."""
        # the pixels' digest first: a picture shown by many rows is downscaled and encoded once
        digest = hashlib.sha1(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
        if digest in self._seen:
            return self._seen[digest]
        small = image.convert("RGB")
        small.thumbnail((SIDE, SIDE))  # keeps the aspect ratio, never enlarges
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=QUALITY)
        url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        if self._size + len(url) > self.budget:
            self._seen[digest] = None
            return None
        self._size += len(url)
        self._seen[digest] = len(self.urls)
        self.urls.append(url)
        return self._seen[digest]

    def note(self) -> str | None:
        """What the page says of the images it does not show (``None`` when it shows them all)."""
        if not self.left_out:
            return None
        return (
            f"{self.left_out} images not shown: the page's thumbnails stop at {self.budget // 2**20} MiB "
            "(their paths are)."
        )
