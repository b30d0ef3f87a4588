"""Remote images of a request, fetched only where the server allows it (``rmkit serve --allow-remote-images``).

By default a request's ``image_url`` parts must hold data URLs: an ``http(s)`` URL is refused (422), so a
request never makes the server reach out to an address its client chose. With the flag, each ``http(s)``
URL of an ``image_url`` part is fetched before the request is parsed, in a worker thread (the event loop
goes on), with a timeout, and at most ``max_bytes`` read: a larger image (by its ``Content-Length`` or by
what arrives) is answered 413, an address that fails or times out 422, both naming the part. The bytes
fetched become the part's data URL, so the image is then opened and checked (its pixel limit: 413) as a
data URL is.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rmkit.serving.protocols import RequestError


@dataclass(frozen=True)
class RemoteImages:
    """The limits of fetching: ``max_bytes`` an image, ``timeout`` seconds to connect and each read."""

    max_bytes: int
    timeout: float

    def fetched(self, body: Any, where: str = "") -> Any:
        """``body`` with every ``http(s)`` URL of an ``image_url`` part replaced by the data URL of what it
        serves (module docstring); the rest of ``body`` as it was."""
        if isinstance(body, list):
            return [self.fetched(v, f"{where}[{i}]") for i, v in enumerate(body)]
        if not isinstance(body, dict):
            return body
        url = (body.get("image_url") or {}) if body.get("type") == "image_url" else {}
        if isinstance(url, dict) and str(url.get("url", "")).startswith(("http://", "https://")):
            return {**body, "image_url": {**url, "url": self.fetch(url["url"], where)}}
        return {k: self.fetched(v, f"{where}.{k}" if where else k) for k, v in body.items()}

    def fetch(self, url: str, where: str) -> str:
        """The data URL of the image at ``url`` (``where``: the part, for errors)."""
        limit = f"the limit of remote images is {self.max_bytes} bytes"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as reply:  # noqa: S310 (http(s) only)
                declared = reply.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise RequestError(f"{url} has {declared} bytes; {limit}", field=where, status=413)
                data = reply.read(self.max_bytes + 1)
                kind = reply.headers.get_content_type()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise RequestError(f"cannot fetch the image {url}: {reason}", field=where) from None
        if len(data) > self.max_bytes:
            raise RequestError(
                f"{url} sends more than {self.max_bytes} bytes; {limit}", field=where, status=413
            )
        kind = kind if kind.startswith("image/") else "image/png"
        return f"data:{kind};base64," + base64.b64encode(data).decode()
