"""``--backend ray`` and :mod:`rmkit.ray` on a real local Ray cluster (one for the module, this machine
alone): the file equals ``rmkit score``'s in one process, whatever the actors' timing, a crashed actor, a
killed driver or a Parquet input; a bad row stops it as in one process; ``rank`` and ``eval`` on Ray; Ray
Datasets scored in place; the Ray-free scorer and the spans of a file."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray_chaos
from conftest import kill_when_done, write_jsonl
from test_scoring import prompt_rows, read_jsonl

import rmkit
from rmkit import kinds
from rmkit.cli import main
from rmkit.jobs.scorer import Scorer

TESTS = Path(__file__).resolve().parent
# one row a batch on one thread: the one-process run and the actors do the very same arithmetic, so their
# bytes can be compared (more threads may sum a product in another order)
EXACT = ["--batch-tokens", "1", "--threads", "1", "--on-error", "skip"]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (2 CPUs, a small object store, no dashboard, no usage stats);
    its workers register the chaos kind (tests/ray_chaos.py). Yields the address other drivers join."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")  # for the drivers the tests start too
        ray.init(
            num_cpus=2,
            object_store_memory=200 * 2**20,
            include_dashboard=False,
            # Ray 2.60 swaps loopback for this machine's own address: the cluster is still this machine alone
            _node_ip_address="127.0.0.1",
            runtime_env={
                "env_vars": {"PYTHONPATH": str(TESTS)},
                "worker_process_setup_hook": "ray_chaos.setup",
            },
        )
        ray_chaos.setup()  # the driver recognises the kind too (rmkit eval reads a checkpoint's kind first)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            gc.collect()  # what the tests left in reference cycles is freed while connected, not after
            ray.shutdown()
            kinds.unregister("chaos")


def chaos(path: Path, out: Path, **settings) -> Path:
    """A copy of the checkpoint ``path`` read as the chaos kind with ``settings`` (tests/ray_chaos.py)."""
    shutil.copytree(path, out)
    config = json.loads((out / "config.json").read_text())
    config["rmkit"].update(kind="chaos", chaos=settings)
    (out / "config.json").write_text(json.dumps(config))
    return out


def data_with_bad_row(tmp_path: Path, n: int) -> tuple[Path, list[dict]]:
    rows = prompt_rows(n)
    rows[5]["response"] = 3  # a bad row: skipped and written to the rejects
    return write_jsonl(tmp_path / "in.jsonl", rows), rows


def one_process(rm: Path, data: Path, out: Path, *flags: str) -> Path:
    assert main(["score", "--model", str(rm), "--input", str(data), "--output", str(out), *flags]) == 0
    return out


@pytest.mark.ray
def test_ray_writes_the_one_process_file_whatever_the_actors_timing(cluster, rm_path, tmp_path):
    data, rows = data_with_bad_row(tmp_path, 40)
    want = one_process(rm_path, data, tmp_path / "one.jsonl", *EXACT)
    slow = chaos(rm_path, tmp_path / "chaos", delay=0.2)
    flags = ["--backend", "ray", "--replicas", "2", "--chunk-rows", "3", *EXACT]
    got = one_process(slow, data, tmp_path / "ray.jsonl", *flags)

    assert [r["id"] for r in read_jsonl(got)] == [r["id"] for r in rows if r["id"] != "r5"]
    assert got.read_bytes() == want.read_bytes()
    assert (tmp_path / "ray.rejects.jsonl").read_text() == (tmp_path / "one.rejects.jsonl").read_text()
    summary = json.loads((tmp_path / "ray.summary.json").read_text())
    assert summary["rows"] == 39 and summary["skipped"] == 1 and summary["backend"] == "ray"
    assert summary["dtype"] == "fp32"
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.ray
def test_an_actor_that_dies_on_its_first_batch_still_gives_the_one_process_file(cluster, rm_path, tmp_path):
    data, _ = data_with_bad_row(tmp_path, 24)
    want = one_process(rm_path, data, tmp_path / "one.jsonl", *EXACT)
    flag = tmp_path / "crashed"
    crashing = chaos(rm_path, tmp_path / "chaos", crash_once=str(flag))
    flags = ["--backend", "ray", "--replicas", "2", "--chunk-rows", "4", *EXACT]
    got = one_process(crashing, data, tmp_path / "ray.jsonl", *flags)

    assert flag.exists(), "no actor crashed"
    assert got.read_bytes() == want.read_bytes()
    assert (tmp_path / "ray.rejects.jsonl").read_text() == (tmp_path / "one.rejects.jsonl").read_text()
    assert json.loads((tmp_path / "ray.summary.json").read_text())["rows"] == 23


@pytest.mark.ray
def test_a_killed_driver_resumes_to_the_one_process_file(cluster, rm_path, tmp_path):
    data, _ = data_with_bad_row(tmp_path, 300)
    want = one_process(rm_path, data, tmp_path / "one.json", *EXACT)
    out = tmp_path / "ray.json"
    flags = ["--backend", "ray", "--replicas", "2", "--chunk-rows", "2", *EXACT]
    command = ["score", "--model", str(rm_path), "--input", str(data), "--output", str(out), *flags]
    state = tmp_path / "ray.json.rank0-of-1.part.state.json"
    done = kill_when_done([*command, "--ray-address", cluster], state, 20)
    assert 0 < done < 300 and not out.exists()
    with open(tmp_path / "ray.json.rank0-of-1.part", "a") as f:  # what a kill in the middle of a write leaves
        f.write('299\t{"prompt": "half a li')

    assert main([*command, "--resume"]) == 0
    assert out.read_bytes() == want.read_bytes()
    assert (tmp_path / "ray.rejects.jsonl").read_text() == (tmp_path / "one.rejects.jsonl").read_text()
    summary = json.loads((tmp_path / "ray.summary.json").read_text())
    assert summary["rows"] == 299 and summary["skipped"] == 1


@pytest.mark.ray
def test_rank_on_ray_writes_the_one_process_file(cluster, rm_path, tmp_path):
    rows = [
        {
            "id": i,
            "prompt": p["prompt"],
            "responses": [p["response"], "Paris.", "Two plus two is four."][: 2 + i % 2],
        }
        for i, p in enumerate(prompt_rows(9))
    ]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    base = ["--model", str(rm_path), "--input", str(data), "--top-k", "1", *EXACT]
    assert main(["rank", *base, "--output", str(tmp_path / "one.jsonl")]) == 0
    ray_flags = ["--backend", "ray", "--replicas", "1,2", "--chunk-rows", "2"]
    assert main(["rank", *base, *ray_flags, "--output", str(tmp_path / "ray.jsonl")]) == 0

    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    ranked = read_jsonl(tmp_path / "ray.jsonl")
    assert [len(r["scores"]) for r in ranked] == [len(r["responses"]) for r in rows]
    assert all(len(r["ranking"]) == 1 for r in ranked)


@pytest.mark.ray
def test_default_batches_on_ray_give_the_one_process_scores(cluster, rm_path, tmp_path):
    """With rows batched together (the default budget), the actors' batches are not the one process's: the
    scores agree to float rounding, not bit for bit."""
    data, rows = data_with_bad_row(tmp_path, 30)
    want = read_jsonl(one_process(rm_path, data, tmp_path / "one.jsonl", "--on-error", "skip"))
    flags = ["--backend", "ray", "--replicas", "2", "--chunk-rows", "7", "--on-error", "skip"]
    got = read_jsonl(one_process(rm_path, data, tmp_path / "ray.jsonl", *flags))

    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-6)


@pytest.mark.ray
def test_score_dataset_adds_the_scores_of_rmkit_score_to_a_ray_dataset(cluster, rm_path, tmp_path):
    import ray

    import rmkit.ray

    rows = prompt_rows(10)
    pairs = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": "Paris."} for r in rows[:4]]
    want = read_jsonl(one_process(rm_path, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "one.jsonl"))
    slow = chaos(rm_path, tmp_path / "chaos", delay=0.2)
    options = ray.data.DataContext.get_current().execution_options
    options.preserve_order = True  # Ray's rule for the order of blocks (a dataset takes it when made)
    try:
        blocks = ray.data.from_items(rows, override_num_blocks=4)
    finally:
        options.preserve_order = False
    got = rmkit.ray.score_dataset(blocks, slow, replicas="2", chunk_rows=2).take_all()
    pair_scores = rmkit.ray.score_dataset(ray.data.from_items(pairs), rm_path).take_all()

    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-6)
    assert [r["scores"] for r in got] == [[r["score"]] for r in got]
    assert [r["meta"] for r in got] == [r["meta"] for r in rows]
    assert all(r["score"] is None and len(r["scores"]) == 2 for r in pair_scores)
    assert [r["scores"][0] for r in pair_scores] == pytest.approx([r["score"] for r in want[:4]], abs=1e-6)


def test_the_scorer_object_gives_rmkit_scores_in_order_without_ray(rm_path, tmp_path):
    rows = prompt_rows(9)
    want = read_jsonl(one_process(rm_path, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "one.jsonl"))
    scorer = Scorer(rm_path, batch_tokens=300)
    pair = {"prompt": rows[0]["prompt"], "chosen": rows[0]["response"], "rejected": rows[1]["response"]}

    assert [s[0] for s in scorer(rows)] == pytest.approx([r["score"] for r in want], abs=1e-6)
    alone = scorer([{"prompt": pair["prompt"], "response": pair[k]} for k in ("chosen", "rejected")])
    assert scorer([pair]) == [pytest.approx([alone[0][0], alone[1][0]], abs=1e-6)]
    with pytest.raises(rmkit.RMKitError, match="row 1"):
        scorer([rows[0], {"prompt": "x", "response": 3}])
    assert Scorer(rm_path, on_error="skip")([rows[0], {"prompt": "x", "response": 3}])[1] is None


def test_ray_is_imported_only_for_the_ray_backend():
    code = "import sys, rmkit, rmkit.cli, rmkit.jobs.score, rmkit.jobs.rank, rmkit.evaluation.run\n"
    code += "print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_replicas_must_be_n_or_min_max(rm_path, tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", prompt_rows(2))
    base = ["score", "--model", str(rm_path), "--input", str(data), "--output", str(tmp_path / "o.jsonl")]
    assert main([*base, "--backend", "ray", "--replicas", "3,1"]) == 2
    assert "--replicas: expected N or MIN,MAX" in capsys.readouterr().err


@pytest.mark.ray
def test_eval_on_ray_gives_the_one_process_scores_and_metrics(cluster, rm_path, tmp_path):
    pairs = [
        {"prompt": r["prompt"], "chosen": r["response"], "rejected": s["response"], "subset": f"s{i % 2}"}
        for i, (r, s) in enumerate(zip(prompt_rows(12), prompt_rows(13)[1:], strict=True))
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    flags = ["--data", str(data), "--no-plots", "--bootstrap", "50", "--batch-tokens", "1", "--threads", "1"]
    assert main(["eval", "--model", str(rm_path), *flags, "--output-dir", str(tmp_path / "one")]) == 0
    crashing = chaos(rm_path, tmp_path / "chaos", crash_once=str(tmp_path / "crashed"), delay=0.05)
    ray_flags = ["--backend", "ray", "--replicas", "2", "--model", str(crashing)]
    assert main(["eval", *flags, *ray_flags, "--output-dir", str(tmp_path / "ray")]) == 0

    assert (tmp_path / "crashed").exists()
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "ray"))
    assert two["results"]["chaos"] == one["results"][rm_path.name]
    scores = [read_jsonl(tmp_path / d / "scores.jsonl") for d in ("one", "ray")]
    assert [{k: v for k, v in r.items() if k != "model"} for r in scores[1]] == [
        {k: v for k, v in r.items() if k != "model"} for r in scores[0]
    ]
    assert len(scores[1]) == 12


@pytest.mark.ray
def test_a_parquet_file_is_read_by_row_groups_on_ray_and_gives_the_one_process_file(
    cluster, rm_path, tmp_path
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(prompt_rows(23)), data, row_group_size=7)
    want = one_process(rm_path, data, tmp_path / "one.jsonl", *EXACT)
    flags = ["--backend", "ray", "--replicas", "2", "--chunk-rows", "5", *EXACT]
    got = one_process(rm_path, data, tmp_path / "ray.jsonl", *flags)

    assert got.read_bytes() == want.read_bytes()
    assert len(read_jsonl(got)) == 23


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".json"])
def test_spans_cover_every_record_once_in_order(tmp_path, suffix):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rmkit.data import read_records
    from rmkit.jobs.shards import plan_spans, read_span

    rows = prompt_rows(17)
    path = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=5)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:  # blank lines between records: rows are line numbers
        path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))
    every = [(k, row, record) for k, (row, record) in enumerate(read_records(path))]

    for start in (0, 3, 16, 17):
        spans = list(plan_spans(str(path), start, 4))
        assert [x for s in spans for x in read_span(str(path), s)] == every[start:]
        assert all(s.stop - s.start == 4 for s in spans[:-1])


@pytest.mark.ray
def test_a_bad_row_on_ray_stops_the_run_as_in_one_process_keeping_the_spans_before_it(
    cluster, rm_path, tmp_path, capsys
):
    data, _ = data_with_bad_row(tmp_path, 12)
    base = ["score", "--model", str(rm_path), "--input", str(data), "--chunk-rows", "2"]
    assert main([*base, "--output", str(tmp_path / "one.jsonl")]) == 2
    one = capsys.readouterr().err.strip().splitlines()[-1]
    assert main([*base, "--output", str(tmp_path / "ray.jsonl"), "--backend", "ray", "--replicas", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]

    assert err.startswith("rmkit score: error: ") and "Traceback" not in err
    assert err.split(" (")[0] == one.split(" (")[0]  # the file, row 6 and field, in one line
    assert "row 6" in err and "4 records done are kept" in err  # the two spans before the bad one
    state = json.loads((tmp_path / "ray.jsonl.rank0-of-1.part.state.json").read_text())
    assert (
        state["records"] == 4 and len((tmp_path / "ray.jsonl.rank0-of-1.part").read_text().splitlines()) == 4
    )
