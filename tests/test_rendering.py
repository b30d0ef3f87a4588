"""Rendering and tokenising: templates, EOS, and the truncation rule."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rmkit.data import Example, ExampleTokenizer, examples_from, render_plain

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
