"""Running the app: ``rmkit serve`` (uvicorn until SIGTERM) and :func:`running` (a server in a thread).

On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets the requests in flight get their replies,
then the app's shutdown stops the batch worker once the queue is empty.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from rmkit import runtime
from rmkit.serving.app import ServeConfig, create_app, load, load_cost

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop on SIGTERM or SIGINT, once graceful, exits with status 0
    (uvicorn raises the signal again after its shutdown, which ends the process with -15)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def _server(app: Starlette, *, access_log: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=None,  # a request in flight is always answered
        timeout_keep_alive=30,  # RL clients reuse connections between steps
        backlog=4096,
    )
    return _Server(config)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(config: ServeConfig) -> None:
    """``rmkit serve``: load the model and serve until SIGTERM or Ctrl-C."""
    runtime.bound_arenas(
        mapped_from=runtime.MAPPED_FROM
    )  # before the server's threads allocate (rmkit.runtime.release_memory)
    with runtime.start(config.device, config.threads) as rt:
        app = create_app(load(config, rt.device), config, load_cost(config, rt.device))
        sock = _bind(config.host, config.port)
        log.info(
            "rmkit serve: %s on %s (POST /score, /get_reward, /pooling, /classify, /reward; GET /health, "
            "/metrics)",
            config.model,
            _url(sock),
        )
        if config.cost_model:
            log.info("rmkit serve: the cost model %s on the same routes under /cost", config.cost_model)
        _server(app, access_log=config.access_log).run(sockets=[sock])
        log.info("rmkit serve: stopped")


@contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL and stops it on exit::

    with running(rmkit.serve(rm)) as url:
        requests.post(url + "/score", json={"texts": ["..."]})
    """
    sock = _bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped before it started")
            threading.Event().wait(0.01)
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
