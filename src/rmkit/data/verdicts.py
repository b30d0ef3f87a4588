"""A generating judge's verdict parsers: each reads the verdict a judge wrote at the end of its judgment, by
its convention, or gives ``None`` when the text holds none (:mod:`rmkit.data.judging` names them in a
template, ``--judge-parser``)."""

from __future__ import annotations

import re


def _last(pattern: str, text: str) -> re.Match | None:
    found = list(re.finditer(pattern, text))
    return found[-1] if found else None


def parse_rating(text: str) -> float | None:
    """RewardBench 2's ratings rule: an integer 1-10 that ends the judgment."""
    m = re.search(r"\b([1-9]|10)\b\s*$", text.strip())
    return float(m.group(1)) if m else None


def parse_boxed(text: str) -> float | None:
    """The last ``\\boxed{True}`` (1) or ``\\boxed{False}`` (0)."""
    m = _last(r"\\boxed\{\s*(True|False)\s*\}", text)
    return None if m is None else float(m.group(1) == "True")


def parse_yes_no(text: str) -> float | None:
    """The last ``Final Judgement: Yes`` (1) or ``No`` (0) (also spelt Judgment)."""
    m = _last(r"Final Judge?ment:\s*\**\s*(Yes|No)\b", text)
    return None if m is None else float(m.group(1) == "Yes")


def parse_ab(text: str) -> float | None:
    """MT-Bench's pairwise verdict, checked in its order: ``[[A]]`` (1: A is better), ``[[B]]`` (0), ``[[C]]``
    (0.5, a tie)."""
    for mark, value in (("[[A]]", 1.0), ("[[B]]", 0.0), ("[[C]]", 0.5)):
        if mark in text:
            return value
    return None


def parse_abcd(text: str) -> float | None:
    """RewardBench 2's four-way verdict, checked in its order: ``[[A]]`` ... ``[[D]]`` (0 ... 3)."""
    return next(
        (float(k) for k, mark in enumerate(("[[A]]", "[[B]]", "[[C]]", "[[D]]")) if mark in text), None
    )


def parse_scores_json(text: str) -> float | None:
    """NeMo Gym's pairwise GenRM verdict, the last JSON object with ``ranking`` (1: response 1 much better
    ... 6: response 2 much better) or ``score_1`` and ``score_2`` (1-5 each): the first answer's share,
    ``(6 - ranking) / 5``, else 1, 0.5 or 0 as ``score_1`` is above, equal to or below ``score_2``."""
    import json

    for m in reversed(list(re.finditer(r"\{[^{}]*\}", text))):
        try:
            found = json.loads(m.group(0))
        except ValueError:
            continue
        ranking = found.get("ranking") if isinstance(found, dict) else None
        if isinstance(ranking, (int, float)) and 1 <= ranking <= 6:
            return (6 - float(ranking)) / 5
        one, two = (found.get(k) for k in ("score_1", "score_2")) if isinstance(found, dict) else (None, None)
        if isinstance(one, (int, float)) and isinstance(two, (int, float)):
            return 1.0 if one > two else 0.5 if one == two else 0.0
    return None


def parse_overall_judgment(text: str) -> float | None:
    """VL-RewardBench's verdict (``cal.py``; UnifiedReward writes the same): its pattern, ``Overall Judgment``
    or ``Therefore``, then ``Answer N is (the) (slightly) better``, case-insensitive, searched in the text
    with its new lines and ``*`` removed; ``Answer 1`` is 1, ``Answer 2`` is 0. Any other number is no verdict
    (``cal.py`` would count it as agreeing with the human: a judge naming an answer that was not shown)."""
    pattern = (
        r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better"
    )
    m = re.search(pattern, text.replace("\n", "").replace("*", ""), re.IGNORECASE)
    return {"1": 1.0, "2": 0.0}.get(m.group(1)) if m else None


def parse_mmrb(text: str) -> float | None:
    """Multimodal RewardBench's verdict (``2_get_accuracy.py``), checked in its order: ``[[A]]`` (1), ``[[B]]``
    (0); nothing else (its runner then draws a seeded coin: the suite's)."""
    return 1.0 if "[[A]]" in text else 0.0 if "[[B]]" in text else None


def parse_first_second(text: str) -> float | None:
    """LLaVA-Critic's pairwise verdict as rmkit reads it (its project publishes no parser): the last
    "the first/second response is (slightly) better" or "the better response is the first/second"; first
    is 1, second 0."""
    m = _last(
        r"(?i)\b(first|second)\s+response\s+is\s+(?:slightly\s+)?better|better\s+response\s+is\s+the\s+(first|second)",
        text,
    )
    return None if m is None else float((m.group(1) or m.group(2)).lower() == "first")


PARSERS = {
    "rating": parse_rating,
    "boxed": parse_boxed,
    "yes-no": parse_yes_no,
    "ab": parse_ab,
    "abcd": parse_abcd,
    "scores-json": parse_scores_json,
    "overall-judgment": parse_overall_judgment,
    "mmrb": parse_mmrb,
    "first-second": parse_first_second,
}
PAIRWISE_PARSERS = ("ab", "scores-json", "overall-judgment", "mmrb", "first-second")
