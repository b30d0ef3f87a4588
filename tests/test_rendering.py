"""Rendering and tokenising: templates, EOS, and the truncation rule."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rmkit.data import Example, ExampleTokenizer, RowCounts, examples_from, render_plain

CHAT = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def example(prompt: str, response: str) -> Example:
    return Example(1, [{"role": "user", "content": prompt}], [response], is_pair=False)


def test_plain_template_is_documented_shape():
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    assert render_plain(msgs) == "System: S\n\nUser: U\n\nAssistant: A"


def test_chat_template_is_used_when_present(tmp_path):
    from conftest import make_tokenizer

    tok = make_tokenizer(tmp_path, chat_template=CHAT)
    enc = ExampleTokenizer(tok)
    assert enc.render([{"role": "user", "content": "Hi"}], "Yo") == "<s>user\nHi</s><s>assistant\nYo</s>"
    (encoded,) = enc.tokenize([example("Hi", "Yo")])[0]
    assert encoded.ids == tok("<s>user\nHi</s><s>assistant\nYo</s>", add_special_tokens=False)["input_ids"]
    assert (
        ExampleTokenizer(tok, template="plain").render([{"role": "user", "content": "Hi"}], "Yo")
        == "User: Hi\n\nAssistant: Yo"
    )


def test_truncation_keeps_bos_and_the_response_end(llama_path):
    tok = AutoTokenizer.from_pretrained(llama_path)
    long_prompt = "What is two plus two? " * 50
    full = ExampleTokenizer(tok).tokenize([example(long_prompt, "Two plus two is four.")])[0][0]
    cut = ExampleTokenizer(tok, max_length=24).tokenize([example(long_prompt, "Two plus two is four.")])[0][0]
    assert cut.truncated and not full.truncated
    assert len(cut.ids) == 24
    assert cut.ids[0] == tok.bos_token_id and cut.ids[-1] == tok.eos_token_id
    assert cut.ids[1:] == full.ids[-23:]
    assert ExampleTokenizer(tok, max_length=24, truncation="drop").tokenize(
        [example(long_prompt, "Four.")]
    ) == [None]


def test_verbatim_text_is_tokenised_as_the_tokenizer_does(llama_path):
    tok = AutoTokenizer.from_pretrained(llama_path)
    ((enc,),) = ExampleTokenizer(tok).tokenize(examples_from(texts=["User: Hi\n\nAssistant: Hello"]))
    assert enc.ids == tok("User: Hi\n\nAssistant: Hello")["input_ids"]


def test_unknown_template_is_refused(llama_path):
    tok = AutoTokenizer.from_pretrained(llama_path)
    with pytest.raises(ValueError, match="template"):
        ExampleTokenizer(tok, template="fancy")
    with pytest.raises(ValueError, match="no chat template"):
        ExampleTokenizer(tok, template="chat")


@pytest.mark.parametrize("backbone", ["llama", "minilm"])
def test_special_tokens_a_text_already_has_are_not_doubled(backbone, request):
    # "<s>Hi" would be "<s><s>Hi" by tokenizer(text); BERT's "[CLS] hi [SEP]" would be "[CLS][CLS] hi [SEP][SEP]".
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(f"{backbone}_path"))
    head = tok.bos_token if backbone == "llama" else tok.cls_token
    tail = "" if backbone == "llama" else tok.sep_token
    plain, marked = ExampleTokenizer(tok).tokenize(examples_from(texts=["User: Hi", f"{head}User: Hi{tail}"]))
    assert marked[0].ids == plain[0].ids == tok("User: Hi")["input_ids"]
    assert marked[0].undoubled and not plain[0].undoubled  # counted (rmkit score says how many), never silent
    counts = RowCounts()
    counts.add(marked)
    counts.add(plain)
    assert counts.undoubled == 1


WORDS = [
    "hello",
    "world",
    "  spaced",
    "\n\nnew",
    "para",
    "x",
    "ümlaut",
    "日本語",
    "can't",
    "1234",
    "!!",
    "a.b",
    "—",
]


def metaspace_tokenizer(prepend: str):
    """A SentencePiece-style tokenizer (Metaspace pieces, as Llama 2 and Mistral), trained on the spot."""
    import random

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(1)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    tok.decoder = decoders.Metaspace(prepend_scheme=prepend)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(50)) for _ in range(300)]
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    )
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("kind", ["bpe", "bpe_chat", "wordpiece", "metaspace_first", "metaspace_always"])
def test_a_long_prompt_tokenised_once_for_all_its_answers_gives_the_ids_of_each_whole_text(
    kind, tmp_path, minilm_path
):
    """Answers to one prompt share one tokenisation of its beginning; the ids are those ``tokenizer(text)``
    gives each whole rendered text, whatever the tokenizer (byte-level BPE, WordPiece, SentencePiece)."""
    import random

    from conftest import make_tokenizer

    tok = {
        "bpe": lambda: make_tokenizer(tmp_path),
        "bpe_chat": lambda: make_tokenizer(tmp_path, chat_template=CHAT),
        "wordpiece": lambda: AutoTokenizer.from_pretrained(minilm_path),
        "metaspace_first": lambda: metaspace_tokenizer("first"),
        "metaspace_always": lambda: metaspace_tokenizer("always"),
    }[kind]()
    rng = random.Random(0)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    enc = ExampleTokenizer(tok)
    for _ in range(60):
        answers = [text(rng.randint(0, 12)) for _ in range(rng.randint(2, 5))]
        ex = Example(
            0, [{"role": "user", "content": text(rng.randint(1, 80))}], answers, False, best_of_n=True
        )
        whole = [
            tok(enc.render(ex.prompt, a), add_special_tokens=not enc.use_chat)["input_ids"] for a in answers
        ]
        eos = [tok.eos_token_id] if enc.add_eos else []  # a rendered conversation ends on EOS
        expected = [w if w[-1:] == eos else w + eos for w in whole]
        assert [t.ids for t in enc.tokenize([ex])[0]] == expected


def test_score_counts_the_texts_that_already_held_the_bos_in_its_summary(rm_path, tmp_path, capsys):
    import json

    import rmkit

    tok = AutoTokenizer.from_pretrained(rm_path)
    rows = [{"text": f"{tok.bos_token}User: Hi {k}\n\nAssistant: Hello"} for k in range(3)] + [
        {"text": "User: Yo"}
    ]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = rmkit.score(model=str(rm_path), input=str(data), output=str(tmp_path / "o.jsonl"))
    assert summary["undoubled_specials"] == 3
    assert (
        "3 rows' texts already began (or ended) with the tokenizer's special tokens"
        in capsys.readouterr().out
    )


def test_a_verbatim_text_ending_as_the_template_ends_a_turn_is_completed_as_a_conversation(tmp_path):
    """verl sends the chat template's text: it scores as the same conversation given as messages (its EOS
    appended where rmkit's rendering appends it); a text ending anywhere else is scored as given."""
    from conftest import make_tokenizer

    from rmkit.data import examples_from

    qwen = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    tok = make_tokenizer(tmp_path, chat_template=qwen)
    enc = ExampleTokenizer(tok)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    (as_messages,) = enc.tokenize(examples_from(messages=[chat]))[0]
    (as_text,) = enc.tokenize(examples_from(texts=[text]))[0]
    assert as_messages.ids[-1] == tok.eos_token_id
    assert as_text.ids[-1] == tok.eos_token_id
    assert as_text.ids[-len(as_messages.ids) :] == as_messages.ids  # the tokenizer's own BOS aside
    (cut,) = enc.tokenize(examples_from(texts=[text[:-1]]))[0]  # not a turn's end: as given
    assert cut.ids == tok(text[:-1])["input_ids"]
    (plain,) = ExampleTokenizer(tok, add_eos=False).tokenize(examples_from(texts=[text]))[0]
    assert plain.ids == tok(text)["input_ids"]
