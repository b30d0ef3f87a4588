"""Hub names read as their snapshot directories: a real hub cache built here (blobs, a snapshot of links, a
ref, as the hub client lays them out), read offline, must give what the same checkpoint given as a directory
gives, through every file a layout or a kind looks at beside ``config.json``."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch
from conftest import make_llama, write_jsonl
from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from safetensors.torch import save_file
from test_layouts import _head, llama_factory, safe_rlhf, trl, trl_sharded

from rmkit import RewardModel
from rmkit.cli import main
from rmkit.errors import RMKitError
from rmkit.locations import snapshot

TEXTS = [
    {"prompt": "What is two plus two?", "response": "Four."},
    {"prompt": "Name the capital of France.", "response": "The capital of France is Paris."},
]


@pytest.fixture(scope="module")
def causal_lm(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("causal"), seed=3)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, read offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def cache(
    hub: Path, repo: str, source: Path, ref: str = "main", listing: dict[str, int] | None = None
) -> str:
    """Put the files of ``source`` in the hub cache ``hub`` as the snapshot of ``repo`` that ``ref`` names,
    as the hub client stores them; ``listing`` (name -> size): the repo's files on the hub, cached as its
    listing. The snapshot's commit."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo}@{ref}".encode()).hexdigest()
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (folder / "blobs").mkdir(exist_ok=True)
    for f in sorted(source.iterdir()):
        data = f.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    if listing is not None:
        entries = {
            name: TreeCacheEntry(size=size, blob_id=f"{i:040x}")
            for i, (name, size) in enumerate(listing.items())
        }
        write_tree_cache(str(folder), commit, entries)
    return commit


def scores(tmp_path: Path, model: str, *flags: str) -> list[float]:
    rows = write_jsonl(tmp_path / "rows.jsonl", TEXTS)
    out = tmp_path / f"{model.replace('/', '_')}{''.join(flags)}.jsonl"
    assert main(["score", "--model", model, *flags, "--input", str(rows), "--output", str(out)]) == 0
    return [json.loads(line)["score"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("builder", [llama_factory, trl_sharded])
def test_a_hub_name_scores_as_the_same_checkpoint_given_as_a_directory(builder, causal_lm, hub, tmp_path):
    """value_head.safetensors beside a causal LM (LLaMA-Factory), and TRL's v_head in sharded safetensors: the
    hub name is read in that layout, not handed to transformers to get a fresh random head."""
    path = builder(tmp_path / "built", causal_lm)[0]
    cache(hub, "org/rm", path)
    assert scores(tmp_path, "org/rm") == pytest.approx(scores(tmp_path, str(path)), abs=1e-6)
    layout = builder.__name__.replace("_sharded", "").replace("_", "-")
    assert RewardModel.from_pretrained("org/rm").metadata["converted_from"]["layout"] == layout


def test_inspect_reads_a_hub_name_s_layout(causal_lm, hub, tmp_path, capsys):
    cache(hub, "org/rm", llama_factory(tmp_path, causal_lm)[0])
    assert main(["inspect", "--model", "org/rm"]) == 0
    said = capsys.readouterr().out
    assert "layout=llama-factory" in said and "scores=True" in said, said


def test_a_pickle_only_repo_is_refused_without_allow_pickle_in_one_line(causal_lm, hub, tmp_path, capsys):
    path = safe_rlhf(tmp_path, causal_lm)[0]
    cache(hub, "org/beaver", path)
    assert main(["score", "--model", "org/beaver", "--input", str(write_jsonl(tmp_path / "r.jsonl", TEXTS)),
                 "--output", str(tmp_path / "o.jsonl")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rmkit score: error: org/beaver: its weights are pickle files (pytorch_model.bin)")
    assert "--allow-pickle" in err
    with pytest.raises(RMKitError, match=r"^org/beaver: its weights are pickle files"):
        RewardModel.from_pretrained("org/beaver")
    given = ("--allow-pickle", "--dimension", "1")
    assert scores(tmp_path, "org/beaver", *given) == pytest.approx(
        scores(tmp_path, str(path), *given), abs=1e-6
    )


def test_a_name_not_in_the_cache_offline_is_the_one_line_of_locations(hub, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "r.jsonl", TEXTS)
    assert (
        main(["score", "--model", "org/absent", "--input", str(rows), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == (
        "rmkit score: error: org/absent: no such directory here, and not a model in the local hub cache "
        "(HF_HUB_OFFLINE is set); give --model a directory, or download it where the hub can be reached (hf "
        "download org/absent) and copy the cache or the directory here"
    )


def test_revision_picks_the_snapshot_a_branch_names(causal_lm, hub, tmp_path):
    main_dir = trl(tmp_path / "a", causal_lm)[0]
    other = trl(tmp_path / "b", causal_lm)[0]
    weight, bias = _head(32, seed=99)
    state = {"v_head.summary.weight": weight, "v_head.summary.bias": bias}
    from safetensors.torch import load_file

    save_file({**load_file(other / "model.safetensors"), **state}, other / "model.safetensors")
    cache(hub, "org/rm", main_dir)
    cache(hub, "org/rm", other, ref="v2")
    assert scores(tmp_path, "org/rm") == pytest.approx(scores(tmp_path, str(main_dir)), abs=1e-6)
    on_v2 = scores(tmp_path, "org/rm", "--revision", "v2")
    assert on_v2 == pytest.approx(scores(tmp_path, str(other)), abs=1e-6)
    assert on_v2 != pytest.approx(scores(tmp_path, str(main_dir)), abs=1e-3)
    with pytest.raises(RMKitError, match=r"^org/rm: cannot get this model from the hub at revision v3: "):
        RewardModel.from_pretrained("org/rm", revision="v3")


def test_only_the_files_rmkit_reads_are_asked_of_the_hub(causal_lm, hub, tmp_path):
    """The repo's listing holds what rmkit never reads (a second copy of the weights as Mistral's repos have,
    pickles of the trainer, an original/ folder); offline, the hub client refuses a snapshot that lacks a file
    asked for, so a snapshot holding only the shards, configs and tokenizer passes only if nothing else was
    asked."""
    path = trl_sharded(tmp_path, causal_lm)[0]
    extra = ["consolidated.safetensors", "pytorch_model.bin", "training_args.bin", "optimizer.pt",
             "original/params.json", "original/tokenizer.model", "generation_config.json", "README.md"]  # fmt: skip
    listing = {f.name: f.stat().st_size for f in path.iterdir()} | dict.fromkeys(extra, 1)
    cache(hub, "org/rm", path, listing=listing)
    for allow_pickle in (False, True):
        got = Path(snapshot("org/rm", allow_pickle=allow_pickle))
        assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in path.iterdir())
    cache(hub, "org/rm2", path, listing=listing)  # a shard the listing has and the snapshot lacks
    shard = next(p for p in (hub / "models--org--rm2" / "snapshots").glob("*/model-*.safetensors"))
    shard.unlink()
    with pytest.raises(
        RMKitError, match=rf"^org/rm2: cannot get this model from the hub at revision \w+: .*{shard.name}"
    ):
        snapshot("org/rm2")


def test_a_decision_tree_on_the_hub_is_its_kind_and_its_pickle_stays_refused(
    causal_lm, hub, tmp_path, capsys
):
    """decision_tree.pkl comes with the snapshot (never unpickled): the kind is recognised and refuses it in
    one line, as it does a directory, instead of reading the checkpoint as another kind."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(causal_lm, num_labels=3)
    model = LlamaForSequenceClassification(config)
    out = tmp_path / "tree"
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((causal_lm / name).read_bytes())
    torch.save({"not": "a tree"}, out / "decision_tree.pkl")
    cache(hub, "org/tree", out)
    rows = write_jsonl(tmp_path / "r.jsonl", TEXTS)
    assert (
        main(["score", "--model", "org/tree", "--input", str(rows), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "decision_tree.pkl" in err and "--allow-pickle" in err, err


class Hub(ThreadingHTTPServer):
    """A model hub on loopback, answering what the hub client asks (a revision's commit, the tree listing, a
    file's HEAD and GET) for the repositories in ``repos`` (name -> {file name: bytes}), all at one commit;
    ``sent`` holds each file sent."""

    commit = "c0ffee" * 6 + "c0ff"

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repos, self.sent = repos, []


class HubHandler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        if parts[:2] == ["api", "models"] and "/".join(parts[2:4]) in self.server.repos:
            files = self.server.repos["/".join(parts[2:4])]
            if parts[4] == "revision":
                return self.send(json.dumps({"id": "/".join(parts[2:4]), "sha": Hub.commit}).encode(), body)
            tree = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for n, b in files.items()]  # fmt: skip
            return self.send(json.dumps(tree).encode(), body)
        if len(parts) > 4 and parts[2] == "resolve" and "/".join(parts[:2]) in self.server.repos:
            name, data = "/".join(parts[4:]), self.server.repos["/".join(parts[:2])].get("/".join(parts[4:]))
            if data is not None:
                self.server.sent += [name] if body else []
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                return self.send(data, body, {"X-Repo-Commit": Hub.commit, "ETag": etag})
        self.send(b"{}", body, status=404 if parts != [""] else 200)

    def send(self, data: bytes, body: bool, headers: dict | None = None, status: int = 200) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


def test_online_only_the_files_rmkit_reads_are_downloaded_and_score_as_the_directory(
    causal_lm, tmp_path, monkeypatch
):
    """Against a hub on loopback, through the hub client: the shards, their index, the configs and the
    tokenizer are downloaded once; a second copy of the weights, the trainer's pickles, an original/ folder and
    the generation config never are; the scores are the directory's."""
    import huggingface_hub.constants

    path = trl_sharded(tmp_path, causal_lm)[0]
    extra = ["consolidated.safetensors", "pytorch_model.bin", "training_args.bin", "optimizer.pt",
             "original/params.json", "original/tokenizer.model", "README.md"]  # fmt: skip
    files = {f.name: f.read_bytes() for f in path.iterdir()} | {n: b"never read" for n in extra}
    hub = Hub({"org/rm": files})
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.server_address[1]}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        got = scores(tmp_path, "org/rm")
        wanted = sorted(f.name for f in path.iterdir() if f.name != "generation_config.json")
        assert sorted(hub.sent) == wanted
        assert got == pytest.approx(scores(tmp_path, str(path)), abs=1e-6)
        scores(tmp_path, "org/rm")
        assert sorted(hub.sent) == wanted  # the second run reads the cache
    finally:
        hub.shutdown()
        hub.server_close()
