"""Rendering examples to text and tokenising them with rmkit's truncation rule.

Rendering. A conversation (prompt messages plus the assistant's answer) is rendered with the tokenizer's
chat template when it has one (``template="auto"`` or ``"chat"``). Otherwise, or with ``template="plain"``,
rmkit's plain template writes each message as ``"{Role}: {content}"`` with roles ``System``, ``User`` and
``Assistant``, joined by a blank line::

    User: What is 2+2?

    Assistant: 4

Rows that arrive already rendered (the ``text`` format, implicit-prompt strings) are used verbatim.

Tokenising. Pre-rendered text is tokenised as ``tokenizer(text)`` does by default, except that special tokens
the text already begins or ends with are not doubled: ``"<s>Hi"`` gives one BOS, not two (a text decoded
with its special tokens, as OpenRLHF sends, keeps them; one without, as verl sends, gets them). Chat-template
output carries its own special tokens, so it is tokenised with ``add_special_tokens=False``; the plain
template uses the tokenizer's defaults. ``double_bos`` reproduces the pipeline some RMs' authors score with
(Athene-RM's model card: the chat template's text tokenised by ``tokenizer(text)``, which adds its BOS
again): every text takes the tokenizer's special tokens, so a template that writes the BOS gives two. A rendered conversation gets the tokenizer's EOS token appended
when it does not already end with it (``add_eos``), so every answer ends on the same token and the score is
read there; with pad = eos this token is still read, because the end is found from the attention mask. A
verbatim text that ends as the chat template ends an assistant's turn (Qwen's ``<|im_end|>\n``: verl sends
the template's text) is such a conversation and is completed alike, so it scores as the same conversation
given as messages does; a text ending anywhere else is scored as given.

Truncation. A sequence longer than ``max_length`` keeps its leading special tokens (BOS, CLS) and its last
``max_length - len(leading)`` tokens: the response and its end token survive and the prompt is cut from the
left (a response longer than the whole budget loses its beginning too). With ``truncation="drop"`` such
rows are dropped instead. Either way the caller counts them.

The answers of one prompt (a pair, a best-of-N row) are cut as a group: the prompt is cut once, by as many
tokens as the longest answer needs to fit, and every answer keeps that same cut prompt (the tokens they all
begin with, after the leading special tokens, are the ones removed). They are so judged on the same context,
and can still share its pass (:func:`rmkit.inference.plan_sharing`). Only an answer that alone is longer
than the budget is cut further, by the rule above. Answers that follow different histories (a pair whose
chosen and rejected continue different conversations) are cut one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rmkit.data.formats import Example, Message

if TYPE_CHECKING:  # transformers loads with the model, not with the data layer
    from transformers import PreTrainedTokenizerBase

TEMPLATES = ("auto", "chat", "plain")
# The truncation rule's version (cached tokenisations made under another one are not reused): 2 cuts the
# prompt of several answers once for all of them.
TRUNCATION_RULE = 2
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_plain(messages: Sequence[Message]) -> str:
    """rmkit's plain template (see the module docstring)."""
    return "\n\n".join(f"{_ROLE_NAMES[m['role']]}: {m['content']}" for m in messages)


@dataclass
class Tokenized:
    """Token ids of one response of one example; ``truncated`` says the truncation rule cut it."""

    ids: list[int]
    truncated: bool = False
    group_cut: bool = False  # its prompt was cut once for all the answers of its example
    undoubled: bool = False  # its text began (or ended) with the special tokens the tokenizer adds: kept once
    doubled: bool = False  # it begins with the tokenizer's BOS twice, as its authors' pipeline gives it


@dataclass
class RowCounts:
    """What became of some rows: kept (``rows``), skipped for bad input (counted by the reader's caller),
    truncated or dropped by the length rule, and the real tokens of the kept ones."""

    rows: int = 0
    skipped: int = 0
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0
    shared: int = 0  # responses scored after a prompt shared with the example's other responses
    unshared: int = 0  # responses of several-response examples that fell back to full sequences
    empty_replies: int = 0  # pairs with an empty answer (accepted and scored)
    non_finite: int = 0  # rows the model gave a NaN or infinite score (written as null)
    split_histories: int = 0  # pairs whose answers follow different histories (each scored after its own)
    groups_cut: int = 0  # several-answer rows whose prompt was cut once for all their answers
    prefix_tokens: int = 0  # prompt tokens not run again because their answers shared one pass over them
    parse_failures: int = 0  # a generating judge's judgments whose verdict could not be read
    undoubled: int = 0  # rows whose text already held the tokenizer's BOS (or EOS): kept once, not doubled
    doubled: int = 0  # rows that begin with the BOS twice, as their model's authors score them (double_bos)

    def add(self, row: list[Tokenized] | None, notes: frozenset[str] = frozenset()) -> None:
        """Count one example's tokenised responses (``None``: dropped) and its normaliser's ``notes``."""
        self.empty_replies += "empty_reply" in notes
        self.split_histories += "split_history" in notes
        if row is None:
            self.dropped += 1
            return
        self.rows += 1
        self.truncated += any(t.truncated for t in row)
        self.groups_cut += any(t.group_cut for t in row)
        self.undoubled += any(t.undoubled for t in row)
        self.doubled += any(t.doubled for t in row)
        self.tokens += sum(len(t.ids) for t in row)

    def merge(self, other: RowCounts) -> RowCounts:
        for name in (
            "rows", "skipped", "truncated", "dropped", "tokens", "shared", "unshared", "empty_replies",
            "split_histories", "non_finite", "groups_cut", "prefix_tokens", "parse_failures", "undoubled",
            "doubled",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


MIN_CUT = 64  # fewest characters of common beginning worth tokenising once


def _cut_point(texts: list[str]) -> int:
    """Where texts that begin alike are cut to tokenise their common beginning once: at a single space
    between two characters that are not spaces, all inside the common beginning; 0 where there is none
    (or too little to be worth it)."""
    if len(texts) < 2:
        return 0
    common = os.path.commonprefix(texts)
    for k in range(len(common) - 2, MIN_CUT - 1, -1):
        if common[k] == " " and not common[k - 1].isspace() and not common[k + 1].isspace():
            return k
    return 0


def _added_special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids ``tokenizer(text)`` puts before and after a text's own (``[CLS]``/``[SEP]``,
    ``<s>``)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k : k + len(bare)] == bare:
            return full[:k], full[k + len(bare) :]
    return [], []


class ExampleTokenizer:
    """Turns examples into token ids: render, tokenise in batches, append EOS, truncate.

    ``max_length=None`` means no limit. ``truncation`` is ``"left"`` (the rule above) or ``"drop"``
    (:meth:`tokenize` gives ``None`` for the example).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int | None = None,
        template: str = "auto",
        add_eos: bool = True,
        truncation: str = "left",
        end_id: int | None = None,
        double_bos: bool = False,
    ):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
        if template == "chat" and not tokenizer.chat_template:
            raise ValueError("template='chat' but the tokenizer has no chat template")
        if truncation not in ("left", "drop"):
            raise ValueError(f"truncation must be 'left' or 'drop', got {truncation!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat = template == "chat" or (template == "auto" and bool(tokenizer.chat_template))
        # The token a conversation ends on, where its score is read: EOS, or a model's own (Athene's CLS).
        self.end_id = end_id if end_id is not None else tokenizer.eos_token_id
        self.add_eos = add_eos and self.end_id is not None
        self.truncation = truncation
        self._special = set(tokenizer.all_special_ids)
        self._added = _added_special_tokens(tokenizer)
        self.double_bos = double_bos  # the module docstring: the authors' pipeline, BOS written and added

    def render(self, prompt: Sequence[Message], response: str) -> str:
        """The text of a conversation ending with ``response`` as the assistant's answer."""
        messages = [*prompt, {"role": "assistant", "content": response}]
        if self.use_chat:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return render_plain(messages)

    def texts(self, ex: Example) -> list[str]:
        """The texts of one example's sequences: each response after its prompt (verbatim when rendered)."""
        if ex.rendered:
            return list(ex.responses)
        return [self.render(ex.prompt_of(i), response) for i, response in enumerate(ex.responses)]

    def tokenize(self, examples: Sequence[Example]) -> list[list[Tokenized] | None]:
        """Token ids of every response of every example (one tokenizer call for all), in order; ``None``
        marks an example dropped by ``truncation="drop"``."""
        jobs: list[tuple[str, bool]] = []
        groups: list[list[int]] = []  # jobs that answer one prompt, whose rendered texts begin alike
        counts: list[int] = []
        texts_of: list[list[str]] = []
        for ex in examples:
            texts = self.texts(ex)
            texts_of.append(texts)
            if len(texts) > 1 and not ex.rendered and ex.rejected_prompt is None:
                groups.append(list(range(len(jobs), len(jobs) + len(texts))))
            jobs += [(text, ex.rendered) for text in texts]
            counts.append(len(texts))
        ids = self._ids(jobs, groups)
        out: list[list[Tokenized] | None] = []
        pos = 0
        for ex, count, texts in zip(examples, counts, texts_of, strict=True):
            given = ids[pos : pos + count]
            full = [
                self._complete(
                    row, conversation=not ex.rendered or self._ends_turn(text), verbatim=ex.rendered
                )
                for row, text in zip(given, texts, strict=True)
            ]
            undoubled = [
                ex.rendered and not self.double_bos and len(self._undouble(g)) < len(g) for g in given
            ]
            pos += count
            encs = self._truncated(full, len(full) > 1 and not ex.rendered and ex.rejected_prompt is None)
            for enc, flag in zip(encs, undoubled, strict=True):
                enc.undoubled = flag
                enc.doubled = self.double_bos and self._begins_twice(enc.ids)
            dropped = self.truncation == "drop" and any(e.truncated for e in encs)
            out.append(None if dropped else encs)
        return out

    def _truncated(self, rows: list[list[int]], one_prompt: bool) -> list[Tokenized]:
        """One example's rows cut by the truncation rule: as a group when they answer ``one_prompt``."""
        return self.truncate_group(rows) if one_prompt else [self.truncate(r) for r in rows]

    def _ids(self, jobs: list[tuple[str, bool]], groups: Sequence[list[int]] = ()) -> list[list[int]]:
        """The token ids of every job's text, as one ``tokenizer(text)`` call each would give them.

        A group of texts that begin alike (the answers of one prompt) has its common beginning tokenised
        once: the texts are cut at a space inside it, between two other characters (no tokenizer's piece
        runs over such a space into the next word), and the cut is checked on the group's first text, whose
        whole tokenisation must equal the pieces'; where it does not, every text of the group is tokenised
        whole. Long prompts before many answers (best-of-N, GRPO groups) so cost one tokenisation."""
        whole = set(range(len(jobs)))
        cuts: list[tuple[list[int], int]] = []  # (a group's members, where their texts are cut)
        for members in groups:
            cut = _cut_point([jobs[m][0] for m in members])
            if cut:
                cuts.append((members, cut))
                whole -= set(members[1:])
        texts = [(i, jobs[i][0]) for i in sorted(whole)]
        for members, cut in cuts:
            texts += [(("prefix", members[0]), jobs[members[0]][0][:cut])]
            texts += [(("rest", m), jobs[m][0][cut:]) for m in members]
        encoded = self._encode(texts, jobs)
        ids: list[list[int]] = [[] for _ in jobs]
        for i in whole:
            ids[i] = encoded[i]
        retry = []
        for members, _ in cuts:
            pieces = [
                self._joined(encoded[("prefix", members[0])], encoded[("rest", m)], jobs[m][1])
                for m in members
            ]
            if pieces[0] != encoded[members[0]]:  # this tokenizer's pieces depend on what comes after
                retry += members[1:]
                continue
            for m, row in zip(members, pieces, strict=True):
                ids[m] = row
        if retry:
            again = self._encode([(m, jobs[m][0]) for m in retry], jobs)
            for m in retry:
                ids[m] = again[m]
        return ids

    def _encode(self, texts: list[tuple[Any, str]], jobs: list[tuple[str, bool]]) -> dict[Any, list[int]]:
        """Ids of ``(key, text)`` pairs in two batched calls: a job's whole text as :meth:`_ids` says (chat
        text holds its special tokens; plain and verbatim text take the defaults), a piece without any."""
        out: dict[Any, list[int]] = {}
        for special in (True, False):
            keys = [k for k, _ in texts if self._special_for(k, jobs) == special]
            if keys:
                batch = [t for k, t in texts if self._special_for(k, jobs) == special]
                for k, row in zip(
                    keys, self.tokenizer(batch, add_special_tokens=special)["input_ids"], strict=True
                ):
                    out[k] = row
        return out

    def _special_for(self, key: Any, jobs: list[tuple[str, bool]]) -> bool:
        """Whether the text under ``key`` takes the tokenizer's special tokens: a piece never does."""
        return not isinstance(key, tuple) and self._takes_specials(jobs[key][1])

    def _takes_specials(self, verbatim: bool) -> bool:
        """Whether a whole text is tokenised with the tokenizer's special tokens: chat-template text holds
        its own; plain and verbatim text take the defaults."""
        return verbatim or not self.use_chat or self.double_bos

    def _joined(self, prefix: list[int], rest: list[int], verbatim: bool) -> list[int]:
        """A text's ids from its two pieces' ids, with the special tokens ``tokenizer(text)`` adds."""
        if self._takes_specials(verbatim):
            head, tail = self._added
            return head + prefix + rest + tail
        return prefix + rest

    def _complete(self, ids: list[int], *, conversation: bool, verbatim: bool = False) -> list[int]:
        """A response's whole sequence: a conversation ends on EOS; verbatim text keeps no doubled specials."""
        if verbatim and not self.double_bos:
            ids = self._undouble(ids)
        if conversation and self.add_eos and (not ids or ids[-1] != self.end_id):
            return [*ids, self.end_id]
        return ids

    def _ends_turn(self, text: str) -> bool:
        """Whether a verbatim ``text`` ends as the chat template ends an assistant's turn (module docstring)."""
        if not (self.use_chat and self.add_eos):
            return False
        return bool(self.turn_end) and text.endswith(self.turn_end)

    @cached_property
    def turn_end(self) -> str | None:
        """What the chat template writes after an assistant's answer (:func:`_turn_end`), rendered once."""
        return _turn_end(self.tokenizer)

    def _begins_twice(self, ids: list[int]) -> bool:
        """Whether ``ids`` begin with the special tokens ``tokenizer(text)`` puts first (BOS) twice."""
        head = self._added[0]
        return bool(head) and ids[: 2 * len(head)] == head + head

    def _undouble(self, ids: list[int]) -> list[int]:
        """Drop the copy of the special tokens ``tokenizer(text)`` added where the text already had them."""
        head, tail = self._added
        if self._begins_twice(ids):
            ids = ids[len(head) :]
        if tail and len(ids) >= 2 * len(tail) and ids[-2 * len(tail) :] == tail + tail:
            ids = ids[: -len(tail)]
        return ids

    def truncate(self, ids: list[int]) -> Tokenized:
        """``ids`` cut to ``max_length`` by the truncation rule of the module docstring."""
        if self.max_length is None or len(ids) <= self.max_length:
            return Tokenized(ids)
        head = self._head(ids)
        return Tokenized(ids[:head] + ids[len(ids) - (self.max_length - head) :], truncated=True)

    def truncate_group(self, rows: list[list[int]]) -> list[Tokenized]:
        """The answers of one prompt cut to ``max_length`` with one cut of their common prompt (module
        docstring); each is ``truncated`` when the cut took tokens from it."""
        longest = max(map(len, rows))
        if self.max_length is None or longest <= self.max_length:
            return [Tokenized(r) for r in rows]
        head = self._head(rows[0])
        common = len(os.path.commonprefix(rows))
        cut = min(longest - self.max_length, max(common - head, 0))
        out = []
        for row in rows:
            alone = self.truncate(row[:head] + row[head + cut :])  # an answer too long even so
            out.append(Tokenized(alone.ids, truncated=cut > 0 or alone.truncated, group_cut=cut > 0))
        return out

    def _head(self, ids: list[int]) -> int:
        """How many leading special tokens (BOS, CLS) truncation keeps: at most half the budget."""
        head = 0
        while head < len(ids) and ids[head] in self._special and head < self.max_length // 2:
            head += 1
        return head


def _turn_end(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """What the chat template writes after an assistant's answer (``<|im_end|>\n``) when that is more than
    white space (a text that ends on EOS already gets nothing appended); ``None`` otherwise."""
    probe = "rmkit-probe-answer"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], tokenize=False
        )
    except Exception:  # a template that wants other turns: no verbatim text is read as a conversation
        return None
    if probe not in text:
        return None
    end = text[text.rindex(probe) + len(probe) :]
    return end if end.strip() else None


def tokenizer_digest(tokenizer) -> str:
    """SHA-256 of what makes a tokenizer's ids: its full definition (a fast tokenizer's JSON, else its
    vocabulary), its chat template and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        [
            type(tokenizer).__name__,
            tokenizer.chat_template,
            tokenizer.all_special_tokens,
            tokenizer.eos_token_id,
        ],
        default=str,
    )
    return hashlib.sha256(body.encode() + b"\0" + extra.encode()).hexdigest()
