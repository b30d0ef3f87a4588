"""A verl custom reward function that asks a running ``rmkit serve`` for the reward of each response.

verl has no setting that names an outside reward-model server (its reward loop starts vLLM servers of its
own), but it calls a custom reward function for every sample. Point it at this file::

    reward.custom_reward_function.path=examples/verl_reward.py reward.custom_reward_function.name=compute_score

(``custom_reward_function.path=...`` and ``.name=...`` in verl before 0.8), with ``RMKIT_URL`` (default
``http://127.0.0.1:8000``) and, if the server has one, ``RMKIT_API_KEY`` in the workers' environment.

The prompt is read from ``extra_info["question"]`` (as verl's data preprocessing scripts store it) or
``extra_info["prompt"]``; the server renders prompt and response with the reward model's own template.
"""

from __future__ import annotations

import json
import os
import urllib.request


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    extra_info = extra_info or {}
    prompt = extra_info.get("question") or extra_info.get("prompt") or ""
    if isinstance(prompt, list):  # chat messages
        body = {"messages": [[*prompt, {"role": "assistant", "content": solution_str}]]}
    else:
        body = {"prompts": [prompt], "responses": [solution_str]}
    headers = {"Content-Type": "application/json"}
    if os.environ.get("RMKIT_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['RMKIT_API_KEY']}"
    url = os.environ.get("RMKIT_URL", "http://127.0.0.1:8000").rstrip("/") + "/score"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())["scores"][0]
