"""rmkit serve --allow-remote-images: an image_url part's http(s) URL fetched from a real HTTP server on
loopback scores as the same image sent as a data URL; too many bytes (declared or sent) and too many pixels
are 413, a server slower than the timeout 422, each naming the part; without the flag a URL is refused."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from vision_models import picture, saved_rm


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


SMALL = png(picture("red"))
BIG = png(picture("blue", (300, 300), seed=2))
HUGE = bytearray(SMALL)  # its header claims 10000x8000 pixels
_at = HUGE.index(b"IHDR")
HUGE[_at + 4 : _at + 12] = struct.pack(">II", 10000, 8000)
HUGE[_at + 17 : _at + 21] = struct.pack(">I", zlib.crc32(bytes(HUGE[_at : _at + 17])))


class Images(BaseHTTPRequestHandler):
    """/small.png, /big.png (with its Content-Length), /big-unsized.png (none: read until closed),
    /huge.png (a header of too many pixels), /slow.png (answers after 3 s)."""

    def do_GET(self):
        name = self.path.strip("/")
        if name == "slow.png":
            time.sleep(3)
        body = {"big.png": BIG, "big-unsized.png": BIG, "huge.png": bytes(HUGE)}.get(name, SMALL)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if name != "big-unsized.png":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading (a refused image)
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    return saved_rm(tmp_path_factory, "qwen2_vl", seed=1)[0]


def request(url: str) -> dict:
    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": "What colour is it?"}]}  # fmt: skip
    return {"messages": [[user, {"role": "assistant", "content": "red"}]]}


def post(base: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        base + "/score", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_remote_images_fetched_only_with_the_flag_and_within_limits(rm, image_server):
    import rmkit
    from rmkit.serving import running

    assert len(SMALL) < 20_000 < len(BIG)
    limits = {"remote_image_mb": 20_000 / (1 << 20), "remote_image_timeout": 1.0}
    part = "messages[0][0].content[0]"
    data_url = "data:image/png;base64," + base64.b64encode(SMALL).decode()
    with running(rmkit.serve(rm, max_wait_ms=10, allow_remote_images=True, **limits)) as base:
        status, offline = post(base, request(data_url))
        assert status == 200
        status, reply = post(base, request(image_server + "/small.png"))
        assert status == 200 and reply["scores"] == pytest.approx(offline["scores"], abs=1e-6)
        for name in ("big.png", "big-unsized.png"):
            status, reply = post(base, request(f"{image_server}/{name}"))
            assert status == 413 and "limit of remote images is 20000 bytes" in reply["error"]["message"]
            assert reply["error"]["param"] == part
        status, reply = post(base, request(image_server + "/huge.png"))
        assert status == 413 and "over the limit of 50000000" in reply["error"]["message"]
        start = time.perf_counter()
        status, reply = post(base, request(image_server + "/slow.png"))
        assert status == 422 and "cannot fetch the image" in reply["error"]["message"]
        assert reply["error"]["param"] == part and time.perf_counter() - start < 2.5
        assert post(base, request(image_server + "/small.png"))[0] == 200  # the server goes on
    with running(rmkit.serve(rm, max_wait_ms=10)) as base:
        status, reply = post(base, request(image_server + "/small.png"))
        assert status == 422 and "data URL" in reply["error"]["message"]
