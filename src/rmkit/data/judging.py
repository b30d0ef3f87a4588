"""What a judge reads: a causal LM asked, in a judge prompt, about an answer (or two), whose next token is
its verdict. The verdict is read from the logits at the last position, in one forward pass, no sampling
(:mod:`rmkit.judges` holds the readout):

=========  ==============================================  =============================================
readout    the score                                       tokens (the template's defaults)
=========  ==============================================  =============================================
verifier   log-odds of yes against no: l(yes) - l(no)      ``Yes``, ``No``
rating     expected rating: sum of v_k softmax(l(t_k))     ``1`` ... ``10`` (values 1 ... 10)
pairwise   log-odds of A against B, both orders averaged,  ``A``, ``B``
           then one score a candidate (Bradley-Terry)
=========  ==============================================  =============================================

A template is a user message with named fields (``{question}`` and ``{answer}``; a pairwise one
``{answer_a}`` and ``{answer_b}``), rendered as the judge's chat template's user turn with its generation
prompt, then the template's ``prefix`` (``"Rating: "``), so that the next token is the verdict. Built-in
templates: :data:`TEMPLATES`; a user's template is a file whose first line may set the prefix
(``prefix: Rating: ``) and whose rest is the message. The whole judge (readout, template text, prefix,
tokens, values) is stored in a checkpoint's rmkit settings (``"judge"``), so it is read back the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rmkit.data.formats import Example, Message
from rmkit.data.guards import LLAMA_GUARD_PREFIX, SHIELDGEMMA_POLICY, SHIELDGEMMA_PROMPT, render_guard
from rmkit.data.rendering import ExampleTokenizer, render_plain
from rmkit.data.verdicts import PAIRWISE_PARSERS, PARSERS
from rmkit.data.vision_templates import VISION_TEMPLATES
from rmkit.errors import RMKitError

JUDGE_KEY = "judge"  # where a checkpoint's rmkit settings keep its judge
READOUTS = ("verifier", "rating", "pairwise", "token", "generate")


@dataclass(frozen=True)
class Template:
    readout: str
    text: str
    prefix: str = ""
    tokens: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    parser: str = ""  # a generating judge's verdict parser (PARSERS)
    ids: tuple[int, ...] = ()  # a token readout's vocabulary entries, by id
    meaning: str = ""  # "cost": a safety classifier, its readout the cost of a response (rmkit.data.guards)
    policy: str = ""  # a guard's default safety policy ({policy} in its text)
    pair_order: str = ""  # a generating pairwise judge's order of the pair (ORDERS; "": both)
    images: str = "first"  # an image judge's images: before the prompt's text, or "last"


def _rating(top: int) -> Template:
    """The one-pass rating template on a 1-``top`` scale, its tokens the numbers and their values."""
    return Template(
        "rating",
        f"Rate how well the response below answers the user, from 1 (useless or harmful) to {top} (excellent). "
        "Reply with the number only.\n\nUser:\n{question}\n\nResponse:\n{answer}",
        "Rating: ",
        tuple(str(k) for k in range(1, top + 1)),
        tuple(float(k) for k in range(1, top + 1)),
    )


TEMPLATES = {
    "verifier": Template(
        "verifier",
        "Here is a question and a proposed answer.\n\nQuestion:\n{question}\n\nProposed answer:\n{answer}\n\n"
        "Is the proposed answer correct and helpful? Reply with Yes or No only.",
        "",
        ("Yes", "No"),
    ),
    "rating": _rating(10),
    "rating-5": _rating(5),
    "pairwise": Template(
        "pairwise",
        "Two assistants answered the user's question below. Judge which answer is better: more helpful, "
        "correct and honest. Do not let the order or the length of the answers sway you. Reply with A or B "
        "only.\n\nQuestion:\n{question}\n\n[Answer A]\n{answer_a}\n[End of answer A]\n\n[Answer B]\n"
        "{answer_b}\n[End of answer B]",
        "Better answer: ",
        ("A", "B"),
    ),
    # The logit of one vocabulary entry after the conversation itself (its chat template, no judge prompt):
    # Llama-3.1/3.3-Nemotron-70B-Reward read the logit of entry 0 at the next position.
    "nemotron": Template("token", "", ids=(0,)),
    # Safety classifiers read as a cost (rmkit.data.guards): the log-odds of the unsafe verdict against the safe
    # one. Llama Guard: the conversation through its own chat template (an empty text).
    "llama-guard": Template("verifier", "", LLAMA_GUARD_PREFIX, ("unsafe", "safe"), meaning="cost"),
    "shieldgemma": Template(
        "verifier", SHIELDGEMMA_PROMPT, "", ("Yes", "No"), meaning="cost", policy=SHIELDGEMMA_POLICY
    ),
    # Generating judges: they reason, then write the verdict the parser reads.
    "rating-generate": Template(
        "generate",
        "Judge how well the response below answers the user. Explain your reasoning briefly, then end with "
        "a line holding only your rating, an integer from 1 (useless or harmful) to 10 (excellent).\n\n"
        "User:\n{question}\n\nResponse:\n{answer}",
        parser="rating",
    ),
    "boxed": Template(
        "generate",
        "Check whether the proposed answer to the question is correct. Reason step by step, then end with "
        "\\boxed{{True}} if it is correct or \\boxed{{False}} if it is not.\n\nQuestion:\n{question}\n\n"
        "Proposed answer:\n{answer}",
        parser="boxed",
    ),
    "final-judgement": Template(
        "generate",
        "Is the proposed answer to the question correct? Think it through, then end with a line "
        "'Final Judgement: Yes' or 'Final Judgement: No'.\n\nQuestion:\n{question}\n\nProposed answer:\n{answer}",
        parser="yes-no",
    ),
    "mt-bench-pairwise": Template(
        "generate",
        "Compare the two answers to the user's question below and decide which is better: more helpful, "
        "correct and honest. Do not let their order, length or the assistants' names sway you. Explain "
        "briefly, then give your verdict strictly as [[A]] if answer A is better, [[B]] if answer B is "
        "better, or [[C]] for a tie.\n\nQuestion:\n{question}\n\n[Answer A]\n{answer_a}\n[End of answer A]"
        "\n\n[Answer B]\n{answer_b}\n[End of answer B]",
        parser="ab",
    ),
    "genrm-json": Template(
        "generate",
        "Evaluate two responses to the conversation below. Rate each one's helpfulness from 1 to 5, then rank "
        "them from 1 (response 1 is much better) to 6 (response 2 is much better). Explain briefly, then end "
        'with JSON only: {{"score_1": <1-5>, "score_2": <1-5>, "ranking": <1-6>}}.\n\nConversation:\n'
        "{question}\n\n[Response 1]\n{answer_a}\n[End of response 1]\n\n[Response 2]\n{answer_b}\n"
        "[End of response 2]",
        parser="scores-json",
    ),
    "four-way": Template(
        "generate",
        "Four assistants answered the user's question below. Decide which answer is best: most helpful, "
        "correct and honest. Do not let the order or the length of the answers, or the assistants' names, "
        "sway you. Explain briefly, then give your verdict strictly as [[A]], [[B]], [[C]] or [[D]].\n\n"
        "Question:\n{question}\n\n[Answer A]\n{answer_a}\n[End of answer A]\n\n[Answer B]\n{answer_b}\n"
        "[End of answer B]\n\n[Answer C]\n{answer_c}\n[End of answer C]\n\n[Answer D]\n{answer_d}\n"
        "[End of answer D]",
        parser="abcd",
    ),
}
TEMPLATES |= {name: Template(**fields) for name, fields in VISION_TEMPLATES.items()}  # the image judges'
DEFAULT_TEMPLATE = {
    "verifier": "verifier",
    "rating": "rating",
    "pairwise": "pairwise",
    "generate": "rating-generate",
}
FAILURE_POLICIES = ("error", "mask", "score=X")
CHOICES = 4  # the answers a four-way judge sees at once
SCHEDULES = ("all", "circular")
ENGINES = ("transformers", "vllm")  # a generating judge's: transformers' generate, or vLLM where installed
# a generating pairwise judge's: each pair in both orders (verdicts averaged), or one order a judgment: a seeded
# coin's (VL-RewardBench) or as given (Multimodal RewardBench); the last two are an image judge's, voted
ORDERS = ("both", "shuffled", "given")


@dataclass
class Judge:
    """A judge's settings: its ``readout``, template ``text`` and ``prefix``, verdict ``tokens`` (and a
    rating's ``values``), the ``template`` name it came from, and for pairwise judges which pairs of an
    example's candidates are compared (``all``, or ``circular``: each with the next)."""

    readout: str
    text: str
    prefix: str = ""
    tokens: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    template: str = ""
    schedule: str = "all"
    parser: str = ""  # generate: the verdict parser (PARSERS)
    ids: list[int] = field(default_factory=list)  # token: the vocabulary entries read, by id
    votes: int = 1  # generate: judgments a sequence (sampled when more than one), their verdicts averaged
    seed: int = 0  # generate: the sampling seed
    max_new_tokens: int = 512  # generate: the longest judgment
    on_parse_failure: str = "error"  # generate: error, mask (no score) or score=X
    engine: str = "transformers"  # generate: what writes the judgments (ENGINES)
    meaning: str = ""  # "cost": a safety classifier read as a cost (rmkit.data.guards), else a reward
    policy: str = ""  # a guard's safety policy, the {policy} of its template
    pair_order: str = "both"  # generate, pairwise: how each judgment shows the pair (ORDERS)
    images: str = "first"  # an image judge's images: before the question's text, or "last"

    @property
    def kind(self) -> str:
        """The kind of RM it is read as (:mod:`rmkit.kinds`): a guard (a cost model) or a judge."""
        return "guard" if self.meaning == "cost" else "judge"

    @property
    def pairwise(self) -> bool:
        """Whether it compares two answers (its template shows A and B, not D)."""
        return "{answer_a}" in self.text and not self.choice

    @property
    def choice(self) -> bool:
        """Whether it picks the best of four answers (its template shows A to D: RewardBench 2's protocol)."""
        return "{answer_d}" in self.text

    def rates_alone(self, ex: Example) -> bool:
        """Whether a four-way judge rates ``ex``'s answers one at a time: a row of other than four answers,
        or of RewardBench 2's Ties subset (its runner rates those)."""
        return len(ex.responses) != CHOICES or str(ex.extra.get("subset", "")).lower() == "ties"

    def order(self, row: int, n: int) -> list[int]:
        """Where a four-way judge shows each answer: a permutation seeded by ``seed`` and the row, so a
        rerun shows every row's answers in the same places (RewardBench 2's runner shuffles unseeded)."""
        import random

        order = list(range(n))
        random.Random(f"{self.seed}:{row}").shuffle(order)
        return order

    def orders(self, row: int) -> list[tuple[int, int]]:
        """How each of the ``votes`` judgments of a pair (row ``row``) shows its answers, ``(0, 1)`` as given or
        ``(1, 0)``: ``shuffled``, each a coin of a generator seeded by ``seed`` and the row (VL-RewardBench's
        ``random.choice([0, 1])`` a judgment, made reproducible); ``given``, all as given; ``both``, each vote
        in both orders (two judgments a vote)."""
        import random

        if self.pair_order == "both":
            return [(0, 1), (1, 0)] * self.votes
        coin = random.Random(f"{self.seed}:{row}")
        return [
            (1, 0) if self.pair_order == "shuffled" and coin.random() < 0.5 else (0, 1)
            for _ in range(self.votes)
        ]

    @classmethod
    def of(cls, given: dict[str, Any]) -> Judge:
        """A judge from settings: stored ones (all fields), or a command's (``readout``, ``template`` name or
        file, ``tokens``, ``values``, ``schedule``), the template filling what is not given."""
        readout = given.get("readout")
        if readout not in READOUTS:
            raise RMKitError(f"unknown judge '{readout}': choose one of {', '.join(READOUTS)}")
        if given.get("text"):
            return cls(**{k: v for k, v in given.items() if k in {f for f in cls.__dataclass_fields__}})
        name = given.get("template") or DEFAULT_TEMPLATE[readout]
        template = _template(name, readout)
        if template.readout != readout and not (readout == "generate" and template.parser):
            raise RMKitError(
                f"the judge template '{name}' is a {template.readout} template, not a {readout} one"
            )
        tokens = list(given.get("tokens") or template.tokens)
        values = [float(v) for v in (given.get("values") or template.values or [])]
        if readout == "rating" and not values:
            try:
                values = [float(t) for t in tokens]
            except ValueError:
                raise RMKitError(f"rating tokens {tokens} are not numbers: give --judge-values") from None
        judge = cls(
            readout, template.text, template.prefix, tokens, values, name, given.get("schedule") or "all"
        )
        judge.parser = given.get("parser") or template.parser
        judge.ids = [int(i) for i in (given.get("ids") or template.ids)]
        judge.meaning, judge.policy = template.meaning, given.get("policy") or template.policy
        judge.images = template.images
        if readout == "generate":  # a one-pass template's prefix and verdict tokens are not a judgment's
            judge.prefix, judge.tokens = "", []
            judge.pair_order = given.get("pair_order") or template.pair_order or "both"
        elif given.get("pair_order") not in (None, "", "both"):  # "both": what a saved judge writes
            raise RMKitError(
                "a pair order (pair_order) is a generating judge's setting: a one-pass pairwise judge reads both orders"
            )
        for key in ("votes", "seed", "max_new_tokens", "on_parse_failure", "engine"):
            if given.get(key) is not None:
                setattr(judge, key, given[key])
        judge.check()
        return judge

    def check(self) -> None:
        if self.readout == "generate":
            return self._check_generate()
        if self.readout == "token":
            if len(self.ids) != 1 and len(self.tokens) != 1:
                raise RMKitError(
                    f"a token judge reads one vocabulary entry: give its id, got {self.ids or self.tokens}"
                )
            return None
        want = {"verifier": 2, "pairwise": 2}.get(self.readout)
        if want and len(self.tokens) != want:
            raise RMKitError(f"a {self.readout} judge reads 2 tokens, got {self.tokens}")
        if self.readout == "rating" and (len(self.tokens) < 2 or len(self.values) != len(self.tokens)):
            raise RMKitError(
                f"a rating judge needs 2 or more tokens, each with a value: {self.tokens}, {self.values}"
            )
        if self.policy and "{policy}" not in self.text:
            raise RMKitError(f"the judge template '{self.template}' has no {{policy}} for --judge-policy")
        fields = ("{answer_a}", "{answer_b}") if self.readout == "pairwise" else ("{answer}",)
        conversation = not self.text and self.meaning == "cost"  # a guard's own chat template renders it
        missing = [f for f in ("{question}", *fields) if f not in self.text and not conversation]
        if missing:
            raise RMKitError(f"the judge template '{self.template}' lacks {', '.join(missing)}")
        if self.schedule not in SCHEDULES:
            raise RMKitError(f"unknown pair schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")

    def _check_generate(self) -> None:
        if self.parser not in PARSERS:
            raise RMKitError(f"unknown verdict parser '{self.parser}': choose one of {', '.join(PARSERS)}")
        if (self.parser in PAIRWISE_PARSERS) != self.pairwise or (self.parser == "abcd") != self.choice:
            raise RMKitError(
                f"the '{self.parser}' parser does not fit the template '{self.template}' (pairwise: {self.pairwise})"
            )
        policy = self.on_parse_failure
        if policy not in ("error", "mask") and not re.fullmatch(r"score=-?[0-9.]+(e-?[0-9]+)?", policy):
            raise RMKitError(f"--on-parse-failure is error, mask or score=X (a number), got {policy!r}")
        if self.votes < 1:
            raise RMKitError(f"--judge-votes must be at least 1, got {self.votes}")
        if self.engine not in ENGINES:
            raise RMKitError(f"unknown judge engine '{self.engine}': choose one of {', '.join(ENGINES)}")
        if self.pair_order not in ORDERS:
            raise RMKitError(f"unknown pair order '{self.pair_order}': choose one of {', '.join(ORDERS)}")

    def verdict(self, texts: Sequence[str], parser: str | None = None) -> tuple[float, int]:
        """The verdict of a sequence's judgments (the mean of the parsed ones; a four-way pick: the most
        frequent, the first on a tie) and how many failed to parse; when none parses, the failure policy's
        value (``nan`` to mask; ``error`` is the caller's)."""
        parser = parser or self.parser
        parsed = [PARSERS[parser](t) for t in texts]
        good = [v for v in parsed if v is not None]
        if good and parser == "abcd":
            return max(sorted(set(good)), key=good.count), len(parsed) - len(good)
        if good:
            return sum(good) / len(good), len(parsed) - len(good)
        policy = self.on_parse_failure
        return (float(policy.split("=", 1)[1]) if policy.startswith("score=") else float("nan")), len(parsed)

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    def pairs(self, n: int) -> list[tuple[int, int]]:
        """The ordered pairs of ``n`` candidates a pairwise judge compares: each pair in both orders."""
        if self.schedule == "circular" and n > 2:
            one_way = [(i, (i + 1) % n) for i in range(n)]
        else:
            one_way = [(i, j) for i in range(n) for j in range(i + 1, n)]
        return [p for i, j in one_way for p in ((i, j), (j, i))]


def _template(name: str, readout: str) -> Template:
    if name in TEMPLATES:
        return TEMPLATES[name]
    path = Path(name)
    if not path.is_file():
        raise RMKitError(f"unknown judge template '{name}': a file, or one of {', '.join(TEMPLATES)}")
    text = path.read_text(encoding="utf-8")
    prefix = ""
    first, _, rest = text.partition("\n")
    if first.startswith("prefix:"):
        prefix, text = first[len("prefix:") :].lstrip(" ").replace("\\n", "\n"), rest
    base = TEMPLATES[DEFAULT_TEMPLATE[readout]]
    return Template(readout, text.rstrip("\n"), prefix, base.tokens, base.values)


def question_of(prompt: Sequence[Message]) -> str:
    """The question a judge is shown: a single user turn as it is, a longer conversation as plain text."""
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return render_plain(prompt)


class JudgeTokenizer(ExampleTokenizer):
    """An :class:`ExampleTokenizer` whose texts are the judge's prompts (module docstring): no EOS is
    appended (the verdict is the next token); a pairwise judge's example gives one text per ordered pair
    of its candidates (:meth:`Judge.pairs`)."""

    def __init__(self, tokenizer: Any, judge: Judge, **options: Any):
        super().__init__(tokenizer, **{**options, "add_eos": False})
        self.judge = judge

    def _complete(self, ids: list[int], *, conversation: bool, verbatim: bool = False) -> list[int]:
        """A judge prompt ends where the verdict goes: without the special tokens a tokenizer adds after a
        text (BERT's ``[SEP]``), and without EOS."""
        tail = self._added[1]
        return ids[: len(ids) - len(tail)] if tail and ids[len(ids) - len(tail) :] == tail else ids

    def _chat(self, content: str) -> str:
        messages = [{"role": "user", "content": content}]
        if self.use_chat:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = render_plain(messages) + "\n\nAssistant: "
        return text + self.judge.prefix

    def _four_way(self, ex: Example) -> list[str]:
        """RewardBench 2's protocol: four answers in one prompt, in the judge's seeded order; the rows
        :meth:`Judge.rates_alone` names have each answer rated alone instead, as its runner does."""
        question = question_of(ex.prompt)
        if self.judge.rates_alone(ex):
            rating = TEMPLATES["rating-generate"].text
            return [self._chat(rating.format(question=question, answer=a)) for a in ex.responses]
        shown = [ex.responses[i] for i in self.judge.order(ex.row, CHOICES)]
        fields = dict(zip(("answer_a", "answer_b", "answer_c", "answer_d"), shown, strict=True))
        return [self._chat(self.judge.text.format(question=question, **fields))]

    def render(self, prompt: Sequence[Message], response: str) -> str:
        if self.judge.readout == "token":  # the conversation itself, through the chat template
            return super().render(prompt, response)
        if self.judge.readout == "pairwise" or self.judge.pairwise or self.judge.choice:
            raise RMKitError("a pairwise judge compares two or more answers of one prompt, not one alone")
        if self.judge.meaning == "cost":
            messages = [*prompt, {"role": "assistant", "content": response}]
            return render_guard(
                self.tokenizer, self.judge, messages, question_of(prompt), response, self.use_chat
            )
        return self._chat(self.judge.text.format(question=question_of(prompt), answer=response))

    def texts(self, ex: Example) -> list[str]:
        if ex.rendered:
            raise RMKitError("a judge reads prompts and answers; rendered texts have no question to show it")
        if self.judge.choice:
            return self._four_way(ex)
        if not (self.judge.readout == "pairwise" or self.judge.pairwise):
            return super().texts(ex)
        if len(ex.responses) < 2 or ex.rejected_prompt is not None:
            raise RMKitError(f"row {ex.row}: a pairwise judge needs two or more answers to one prompt")
        if self.judge.pair_order != "both":
            raise RMKitError(
                f"a text judge shows each pair in both orders, not '{self.judge.pair_order}' (an image judge's)"
            )
        question = question_of(ex.prompt)
        return [
            self._chat(
                self.judge.text.format(question=question, answer_a=ex.responses[i], answer_b=ex.responses[j])
            )
            for i, j in self.judge.pairs(len(ex.responses))
        ]


def example_tokenizer(
    tokenizer: Any, metadata: dict[str, Any], max_length: int | None, template: str, truncation: str
) -> ExampleTokenizer:
    """The tokenizer of a model whose rmkit settings are ``metadata``: a judge's (they hold ``"judge"``), else
    an :class:`ExampleTokenizer` with the settings' ``add_eos``, ``end_token_id`` (the token appended to a
    conversation, where its score is read: EOS unless a layout says otherwise) and ``double_bos`` (Athene-RM)."""
    options = {"max_length": max_length, "template": template, "truncation": truncation}
    if JUDGE_KEY in metadata:
        return JudgeTokenizer(tokenizer, Judge.of(metadata[JUDGE_KEY]), **options)
    end, double = metadata.get("end_token_id"), bool(metadata.get("double_bos"))
    return ExampleTokenizer(
        tokenizer, add_eos=metadata.get("add_eos", True), end_id=end, double_bos=double, **options
    )
