"""Audio RMs (Qwen2-Audio) on a tiny random model: rmkit's inputs equal transformers' Qwen2AudioProcessor's,
end scores equal a plain transformers forward at the last real token under either padding and two budgets,
the value-head checkpoint scores by the formula, each reader and each bad clip, and score/rank/eval/inspect,
serve (input_audio parts) and train (audio encoder and projector frozen) through the kind."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from audio_models import make_alm, sine, wav_bytes, write_wav
from conftest import write_jsonl

from rmkit.data.audio import AudioExample, iter_audio_examples
from rmkit.data.rejects import Rejects
from rmkit.data.sounds import Sound, resample
from rmkit.errors import DataError


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_alm(tmp_path_factory.mktemp("alm"))


@pytest.fixture(scope="module")
def alm_rm(backbone, tmp_path_factory):
    """``(rm, path)``: the tiny Qwen2-Audio given a seeded value head, saved by rmkit and read back."""
    from rmkit.alm import AudioRewardModel

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("alm_rm")
    AudioRewardModel.from_pretrained(backbone).save_pretrained(out)
    return AudioRewardModel.from_pretrained(out), out


def question(text: str, clips: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "audio"}] * clips + [{"type": "text", "text": text}]}]


def examples() -> list[AudioExample]:
    """Rows of different lengths: one clip (a pair), two clips of different lengths, a text-only row."""
    from rmkit.data import Example

    beep, hum = Sound(sine(0.5), 16000, "beep.wav"), Sound(sine(0.8, 220, 22050), 22050, "hum.wav")
    return [
        AudioExample(1, question("What is that sound?"), ["a beep", "a dog barking loudly today"], True,
                     audios=[beep]),
        AudioExample(2, question("Which two?", 2), ["a beep and a hum"], False, audios=[beep, hum]),
        Example(3, [{"role": "user", "content": "hello how can I help"}], ["Paris"], False),
    ]  # fmt: skip


@torch.no_grad()
def plain_forward(rm, row) -> float:
    """The score transformers gives one sequence alone: Qwen2AudioModel's forward with input_features
    (N, mel, frames) and feature_attention_mask, the value head at the last token."""
    ids = torch.tensor([row.ids])
    kwargs = {}
    if row.patches is not None:
        mel = torch.from_numpy(row.patches).reshape(len(row.grids), -1, row.patches.shape[1]).transpose(1, 2)
        mask = torch.arange(mel.shape[-1])[None] < torch.tensor(row.grids)[:, None]
        kwargs = dict(input_features=mel, feature_attention_mask=mask.long())
    hidden = rm.model.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).last_hidden_state
    return float(rm.head(hidden[0, -1]))


def test_inputs_equal_the_qwen2_audio_processor(alm_rm):
    """The ids (each <|AUDIO|> expanded to ((l-1)//2+1-2)//2+1 tokens for l real frames), the log-mel
    features and the real frames are those transformers' Qwen2AudioProcessor gives for the rendered text
    and the clips at 16 kHz."""
    from transformers import Qwen2AudioProcessor

    rm, path = alm_rm
    ex = examples()[1]
    tokenizer = rm.example_tokenizer()
    (row,) = tokenizer.tokenize([ex])[0]
    processor = Qwen2AudioProcessor.from_pretrained(str(path))
    done = processor(
        text=[tokenizer.render(ex.prompt, ex.responses[0])],
        audio=[s.at(16000) for s in ex.audios],
        sampling_rate=16000,
        add_special_tokens=False,  # the rendered chat holds its special tokens, as rmkit tokenises it
        return_tensors="np",
    )
    ids = done["input_ids"][0].tolist()
    assert row.ids[: len(ids)] == ids and row.ids[len(ids) :] == [rm.tokenizer.eos_token_id]  # rmkit's EOS
    assert row.grids == done["feature_attention_mask"].sum(-1).tolist() == [50, 80]
    audio_id = rm.model.config.audio_token_id
    runs = "".join("A" if t == audio_id else "." for t in row.ids).split(".")
    assert [len(r) for r in runs if r] == [((n - 1) // 2 + 1 - 2) // 2 + 1 for n in row.grids] == [12, 20]
    mel = row.patches.reshape(2, -1, row.patches.shape[1]).transpose(0, 2, 1)
    assert np.array_equal(mel, done["input_features"])


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(alm_rm, budget):
    """Every row's score equals transformers' forward of that row alone, one row a batch or all in one."""
    rm, _ = alm_rm
    rows = [r for row in rm.example_tokenizer().tokenize(examples()) for r in row]
    assert len({len(r.ids) for r in rows}) == len(rows)  # different lengths: padding is exercised
    scores = rm.score_rows(rows, batch_tokens=budget)
    assert scores == pytest.approx([plain_forward(rm, r) for r in rows], abs=1e-5)


def test_either_padding_reads_the_last_real_token(alm_rm):
    """A pair of different lengths, right- and left-padded in one batch, scores as each row alone; the last
    column (align-anything's [:, -1] under right padding) reads the shorter answer at a pad token."""
    rm, _ = alm_rm
    pair = rm.example_tokenizer().tokenize(examples()[:1])[0]
    alone = [plain_forward(rm, r) for r in pair]
    batch = rm.batch(pair)
    width = batch["input_ids"].shape[1]
    left_ids = torch.full_like(batch["input_ids"], rm.pad_token_id)
    left_mask = torch.zeros_like(batch["attention_mask"])
    for i, r in enumerate(pair):
        left_ids[i, width - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, width - len(r.ids) :] = 1
    with torch.inference_mode():
        right = rm(**batch, token_scores=True)
        left = rm(left_ids, left_mask, batch["pixel_values"], batch["image_grid_thw"]).end_scores.tolist()
    assert right.end_scores.tolist() == pytest.approx(alone, abs=1e-5)
    assert left == pytest.approx(alone, abs=1e-5)
    assert abs(right.scores[0, -1].item() - alone[0]) > 1e-4


def test_each_examples_clips_run_through_the_encoder_once(alm_rm):
    rm, _ = alm_rm
    prepared = rm.example_tokenizer().tokenize(examples())
    seen = []
    hook = rm.model.model.audio_tower.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        rm.score_rows([r for row in prepared for r in row], batch_tokens=16)
    finally:
        hook.remove()
    assert sum(seen) == 3  # the pair's one clip, the second row's two: not once a row


def test_audio_examples_are_prepared_a_small_chunk_at_a_time(alm_rm, monkeypatch):
    """AudioKind.score prepares at most CHUNK_ROWS examples at a time (each holds its clips' features until
    scored), whatever the reading's chunk_rows; the scores are those of one chunk."""
    from rmkit.kinds import Reading
    from rmkit.kinds import audio as audio_kind

    rm, _ = alm_rm
    reading = Reading(batch_tokens=10**6)
    whole = [raw for _, raw in audio_kind.AudioKind().score(rm, examples() * 2, reading)]
    monkeypatch.setattr(audio_kind, "CHUNK_ROWS", 2)
    seen = []
    hook = rm.model.model.audio_tower.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        chunked = [raw for _, raw in audio_kind.AudioKind().score(rm, examples() * 2, reading)]
    finally:
        hook.remove()
    assert seen == [3, 1, 2]  # the clips of examples 1-2, 3-4 (a text row), 5-6
    assert chunked == [pytest.approx(w, abs=1e-5) for w in whole]


def test_value_head_checkpoint_scores_by_the_formula(alm_rm):
    """An unmodified Qwen2-Audio checkpoint plus value_head.safetensors: weight · h[last token] + bias, h the
    last hidden state of Qwen2AudioForConditionalGeneration loaded by transformers, computed by hand."""
    from safetensors.torch import load_file
    from transformers import Qwen2AudioForConditionalGeneration

    rm, path = alm_rm
    head = load_file(str(path / "value_head.safetensors"))
    config = json.loads((path / "config.json").read_text())
    assert config["rmkit"]["kind"] == "audio" and config["architectures"] == [
        "Qwen2AudioForConditionalGeneration"
    ]
    model = Qwen2AudioForConditionalGeneration.from_pretrained(str(path)).eval()
    (row,) = rm.example_tokenizer().tokenize([examples()[1]])[0]
    mel = torch.from_numpy(row.patches).reshape(2, -1, row.patches.shape[1]).transpose(1, 2)
    mask = (torch.arange(mel.shape[-1])[None] < torch.tensor(row.grids)[:, None]).long()
    with torch.no_grad():
        h = model.model(
            input_ids=torch.tensor([row.ids]), input_features=mel, feature_attention_mask=mask
        ).last_hidden_state[0, -1]
    by_hand = float(head["v_head.summary.weight"][0] @ h + head["v_head.summary.bias"][0])
    assert rm.score_rows([row]) == pytest.approx([by_hand], abs=1e-5)


def test_readers_of_each_format(tmp_path):
    """align-anything TA2T (a path; datasets' decoded array), messages with audio parts (a path, OpenAI's
    input_audio), an audios column at <audio> marks; WAV decoded by wave, FLAC by soundfile, resampled."""
    soundfile = pytest.importorskip("soundfile")
    write_wav(tmp_path / "a.wav", 0.25)
    soundfile.write(tmp_path / "b.flac", sine(0.25, rate=8000), 8000)
    data = base64.b64encode(wav_bytes(sine(0.5))).decode()
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": "What is it?", "audio_path": "a.wav", "response_1": "a", "response_2": "b",
         "overall_response": 2},
        {"prompt": "What is it?", "audio_path": {"array": [0.0, 0.5, 1.0], "sampling_rate": 8000},
         "response_1": "a", "response_2": "b", "overall_response": "1"},
        {"prompt": [{"role": "user", "content": [{"type": "text", "text": "Hear: "},
                                                 {"type": "audio", "audio": "b.flac"}]}],
         "chosen": "x", "rejected": "y"},
        {"messages": [{"role": "user", "content": [{"type": "input_audio",
                                                    "input_audio": {"data": data, "format": "wav"}}]},
                      {"role": "assistant", "content": "a tone"}]},
        {"prompt": "First <audio> then <audio>?", "audios": ["a.wav", "b.flac"], "response": "two"},
    ])  # fmt: skip
    a, b, c, d, e = iter_audio_examples(rows)
    assert a.prompt[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert a.prompt[1]["content"] == [{"type": "audio"}, {"type": "text", "text": "What is it?"}]
    assert (a.responses, b.responses) == (["b", "a"], ["a", "b"]) and a.is_pair and a.audio_refs == ["a.wav"]
    assert b.audios[0].rate == 8000 and b.audios[0].at(16000).tolist() == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    )
    assert c.prompt[0]["content"] == [{"type": "text", "text": "Hear: "}, {"type": "audio"}]
    assert c.audios[0].rate == 8000 and len(c.audios[0].samples) == 2000
    assert d.responses == ["a tone"] and len(d.audios[0].samples) == 8000
    assert np.abs(a.audios[0].samples - sine(0.25)).max() < 1e-4  # 16-bit PCM scaled back to [-1, 1]
    assert [p["type"] for p in e.prompt[0]["content"]] == ["text", "audio", "text", "audio", "text"]
    assert e.audio_refs == ["a.wav", "b.flac"]


def test_resampling_is_linear_interpolation():
    """Sample k of the output is the input at time k / target, between its two nearest samples."""
    ramp = np.arange(6, dtype=np.float32)
    assert resample(ramp, 2, 4).tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5]
    assert resample(ramp, 4, 2).tolist() == [0, 2, 4]
    assert resample(ramp, 3, 3) is ramp


def test_bad_audio_is_named_or_skipped_and_counted(tmp_path):
    """A missing file, bytes that are not audio, a WAV cut short, a clip over the limit, a clip count that
    differs from the marks: each a DataError naming the file, row and field; with rejects, skipped, counted
    and written with its reason."""
    write_wav(tmp_path / "long.wav", 31)
    write_wav(tmp_path / "ok.wav", 0.5)
    good = wav_bytes(sine(0.5))
    (tmp_path / "cut.wav").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 10)
    base = {"prompt": "What?", "response": "x"}
    rows = write_jsonl(tmp_path / "bad.jsonl", [
        {**base, "audios": ["missing.wav"]},
        {**base, "audios": ["junk.wav"]},
        {**base, "audios": ["cut.wav"]},
        {**base, "audio": "long.wav"},
        {"prompt": "<audio> and <audio>", "audios": ["ok.wav"], "response": "x"},
        {"prompt": "What?", "audios": ["ok.wav"], "response": "<audio> x"},
    ])  # fmt: skip
    expected = [
        (1, "audios", "cannot read the audio file"),
        (2, "audios", "cannot decode the audio junk.wav"),
        (3, "audios", "cannot decode the audio cut.wav"),
        (4, "audio", "audio of 31.0 s, over the limit of 30 s"),
        (5, "audios", "1 audio clips for 2 <audio> marks"),
        (6, "audios", "an answer holds <audio>"),
    ]
    for i, (row, field, message) in enumerate(expected):
        single = write_jsonl(tmp_path / f"one{i}.jsonl", [json.loads(rows.read_text().splitlines()[row - 1])])
        with pytest.raises(DataError, match=message) as caught:
            list(iter_audio_examples(single))
        assert (caught.value.field, caught.value.file) == (field, str(single))
    rejects = Rejects(tmp_path / "rejects.jsonl")
    assert list(iter_audio_examples(rows, rejects=rejects)) == []
    rejects.close()
    written = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert rejects.count == 6 and [w["row"] for w in written] == [1, 2, 3, 4, 5, 6]


def test_a_clip_longer_than_the_models_window_or_an_image_is_named(alm_rm):
    """The processor would cut a clip longer than its window, and the chat template drop an image part: both
    are named instead (an image row of a vision benchmark given to an audio RM, say)."""
    from PIL import Image

    from rmkit.data.images import Picture
    from rmkit.data.vision import VisionExample

    rm, _ = alm_rm
    ex = AudioExample(7, question("What?"), ["x"], False, audios=[Sound(sine(1.5), 16000, "long.wav")])
    with pytest.raises(DataError, match="audio 1 lasts 1.5 s; the model hears 1 s") as caught:
        rm.example_tokenizer().tokenize([ex])
    assert (caught.value.row, caught.value.field) == (7, "audios")
    image = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    pictured = VisionExample(8, image, ["x"], False, images=[Picture(Image.new("RGB", (8, 8)), "a.png")])
    with pytest.raises(DataError, match="an audio RM reads no images") as caught:
        rm.example_tokenizer().tokenize([pictured])
    assert (caught.value.row, caught.value.field) == (8, "images")


def test_score_rank_eval_inspect_on_audio_rows(alm_rm, tmp_path):
    """The faces on audio data through the kind: score writes each row's audios and the model's own scores;
    eval gives the pair figures; inspect names the modality and counts the clips; rank ranks."""
    from rmkit.cli import main
    from rmkit.inspect_data import inspect
    from rmkit.jobs.config import InspectConfig

    rm, path = alm_rm
    write_wav(tmp_path / "beep.wav", 0.5)
    write_wav(tmp_path / "hum.wav", 0.8, 220, 22050)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What is that sound?", "audio_path": "beep.wav", "response_1": "a dog barking loudly today",
         "response_2": "a beep", "overall_response": 2},
        {"prompt": "What is that sound?", "audio_path": "hum.wav", "response_1": "a hum",
         "response_2": "a beep", "overall_response": 1},
    ])  # fmt: skip
    out = tmp_path / "s.jsonl"
    assert main(["score", "--model", str(path), "--data", str(pairs), "--output", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["audios"] for x in lines] == [["beep.wav"], ["hum.wav"]]
    assert lines[0]["prompt"][1] == {"role": "user", "content": "<audio>What is that sound?"}
    first = next(iter_audio_examples(pairs))
    rows = rm.example_tokenizer().tokenize([first])[0]
    assert [lines[0]["score_chosen"], lines[0]["score_rejected"]] == pytest.approx(
        rm.score_rows(rows), abs=1e-5
    )

    assert (
        main(["eval", "--model", str(path), "--data", str(pairs), "--output-dir", str(tmp_path / "ev")]) == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    figures = next(iter(metrics["results"].values()))["pairs"]["all"]
    margins = [x["score_chosen"] - x["score_rejected"] for x in lines]
    assert figures["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 2)

    summary = inspect(InspectConfig(data=str(pairs)))
    assert (summary["kind"], summary["modality"], summary["pairs"], summary["audios"]) == (
        "audio",
        "audio+text",
        2,
        2,
    )

    bon = write_jsonl(tmp_path / "bon.jsonl", [
        {"prompt": "Which sound?", "audios": ["hum.wav"], "responses": ["a hum", "a beep", "silence"]}
    ])  # fmt: skip
    assert (
        main(["rank", "--model", str(path), "--data", str(bon), "--output", str(tmp_path / "r.jsonl")]) == 0
    )
    (ranked,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(ranked["ranking"]) == [0, 1, 2] and ranked["audios"] == ["hum.wav"]
    assert ranked["scores"][ranked["best"]] == max(ranked["scores"])


def test_the_server_scores_input_audio_parts_as_offline(alm_rm):
    """rmkit serve: OpenAI-style messages whose user turn holds an input_audio part score as the same
    conversation does offline; a clip over the limit is 413, an image part 422, and the server goes on."""
    import io
    import urllib.error
    import urllib.request

    from PIL import Image

    import rmkit
    from rmkit.serving import running

    rm, _ = alm_rm
    clip = base64.b64encode(wav_bytes(sine(0.6, 330, 22050), 22050)).decode()
    user = {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
                                        {"type": "text", "text": "What is that sound?"}]}  # fmt: skip
    answers = ["a beep", "a dog barking loudly today"]
    body = {"messages": [[user, {"role": "assistant", "content": a}] for a in answers]}
    sound = Sound(np.round(sine(0.6, 330, 22050) * 32767) / 32768, 22050, "")
    offline = [
        rm.score_rows(rm.example_tokenizer().tokenize([AudioExample(0, question("What is that sound?"), [a],
                                                                    False, audios=[sound])])[0])[0]
        for a in answers
    ]  # fmt: skip

    def post(payload):
        req = urllib.request.Request(
            base + "/score", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with running(rmkit.serve(rm, max_wait_ms=10)) as base:
        status, reply = post(body)
        assert status == 200 and reply["scores"] == pytest.approx(offline, abs=1e-5)
        long = base64.b64encode(wav_bytes(sine(31))).decode()
        too_long = {
            **user,
            "content": [{"type": "input_audio", "input_audio": {"data": long, "format": "wav"}}],
        }
        status, reply = post({"messages": [[too_long, {"role": "assistant", "content": "a"}]]})
        assert status == 413 and reply["error"]["param"] == "messages[0].content[0]"
        a_file = {**user, "content": [{"type": "input_audio", "input_audio": {"path": "/etc/hostname"}}]}
        status, reply = post({"messages": [[a_file, {"role": "assistant", "content": "a"}]]})
        assert status == 422 and "must be input_audio data" in reply["error"]["message"]
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
        status, reply = post({"messages": [[image, {"role": "assistant", "content": "a"}]]})
        assert status == 422 and "reads audio and text only: send no image parts" in reply["error"]["message"]
        assert post(body)[0] == 200


def test_train_with_frozen_audio_encoder_then_score(backbone, tmp_path):
    """rmkit train on TA2T pairs with --freeze audio,projector: those modules are reported by module and
    left as they were, the language model trains, and the checkpoint written scores."""
    from safetensors.torch import load_file

    from rmkit.cli import main

    rows = []
    for i, (hz, other) in enumerate([(220, "a high beep"), (880, "a low hum")] * 4):
        write_wav(tmp_path / f"{i}.wav", 0.3 + 0.05 * i, hz)
        right = "a low hum" if hz == 220 else "a high beep"
        rows.append({"prompt": "What is that sound?", "audio_path": f"{i}.wav", "response_1": right,
                     "response_2": other, "overall_response": 1})  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "rm"
    args = ["train", "--model", str(backbone), "--data", str(data), "--output-dir", str(out), "--max-steps", "2",
            "--batch-size", "4", "--eval-split", "0.25", "--freeze", "audio,projector", "--learning-rate", "1e-3"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = load_file(str(backbone / "model.safetensors")), load_file(str(out / "model.safetensors"))
    audio = {k for k in before if "audio_tower." in k}
    projector = {k for k in before if "multi_modal_projector." in k}
    assert (
        audio
        and projector
        and metrics["train"]["frozen"]
        == {
            "audio": sum(before[k].numel() for k in audio),
            "projector": sum(before[k].numel() for k in projector),
        }
    )
    assert all(torch.equal(before[k], after[k]) for k in audio | projector)
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model." in k)
    assert (
        main(["score", "--model", str(out), "--input", str(data), "--output", str(tmp_path / "s.jsonl")]) == 0
    )
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == len(rows)


def test_audio_that_is_not_pcm_wav_without_soundfile_says_how_to_install_it(tmp_path, monkeypatch):
    """Integer PCM WAV needs nothing; other audio needs the optional soundfile, named in one line."""
    import sys

    from rmkit.errors import RMKitError

    monkeypatch.setitem(sys.modules, "soundfile", None)  # as if it were not installed
    write_wav(tmp_path / "ok.wav", 0.1)
    (tmp_path / "b.flac").write_bytes(b"fLaC" + b"\0" * 64)
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": "What?", "audios": ["ok.wav"], "response": "x"},
        {"prompt": "What?", "audios": ["b.flac"], "response": "x"},
    ])  # fmt: skip
    read = iter_audio_examples(rows)
    assert len(next(read).audios[0].samples) == 1600
    with pytest.raises(RMKitError, match=r'b.flac is not integer PCM WAV; .* pip install "rmkit\[audio\]"'):
        next(read)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_integer_pcm_wav_of_each_width_is_scaled_to_its_full_range(width):
    """8-bit WAV is unsigned (128 the zero), 16/24/32-bit signed little-endian: each divided by 2^(bits-1)."""
    import io
    import wave

    from rmkit.data.sounds import _wav

    bits = 8 * width
    values = [0, 1, -1, 2 ** (bits - 1) - 1, -(2 ** (bits - 1))]
    raw = b"".join(
        (v + 128).to_bytes(1, "little") if width == 1 else v.to_bytes(width, "little", signed=True)
        for v in values
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(raw)
    samples, rate = _wav(buffer.getvalue())
    assert rate == 8000 and samples.tolist() == pytest.approx([v / 2 ** (bits - 1) for v in values])
