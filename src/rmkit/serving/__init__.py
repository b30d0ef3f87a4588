"""``rmkit serve``: rewards over HTTP for RL loops, with batching across requests.

- :mod:`.config`: the options (``ServeConfig``);
- :mod:`.app`: the ASGI app, routes, limits and auth (:func:`serve` returns it);
- :mod:`.protocols`: the request and reply shapes (rmkit's, OpenRLHF's, vLLM's, slime's);
- :mod:`.tokenizing`: the tokenizer thread, batched across requests;
- :mod:`.batcher`: the queue and the one model worker over :mod:`rmkit.inference`;
- :mod:`.telemetry`: the counters of ``GET /metrics``;
- :mod:`.server`: running it (uvicorn);
- :mod:`.client`: :func:`reward_function`, a TRL reward function in-process or over HTTP.

The app, the server and the client (and torch) load on first use.
"""

from rmkit import lazy
from rmkit.serving.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "reward_function", "run", "running", "serve"]

_LAZY = {
    "create_app": "rmkit.serving.app",
    "serve": "rmkit.serving.app",
    "reward_function": "rmkit.serving.client",
    "run": "rmkit.serving.server",
    "running": "rmkit.serving.server",
}


__getattr__ = lazy(__name__, _LAZY)
