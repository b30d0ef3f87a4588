"""The vision-language RM benchmarks (rules in :mod:`rmkit.metrics.vision_benchmarks`).

Each row is a pair of answers to a question about an image: the item's example is a
:class:`rmkit.data.vision.VisionExample` (the image before the question, the two answers each scored after
them, the image's pass shared), read as the files are downloaded:

- VL-RewardBench (``MMInstruction/VL-RewardBench``): ``id``, ``query``, ``response`` (two), ``human_ranking``
  (``[0, 1]``: the first is better) and the image as ``image`` (the hub's image feature: bytes and path) or
  ``image_path`` (the GitHub release's ``data.jsonl``: a path beside the file).
- Multimodal RewardBench (``facebookresearch/multimodal_rewardbench``, ``data/all_data.json``): ``ID``,
  ``Text``, ``Image`` (a path beside the file), ``Output1``, ``Output2``, ``Better`` (``Output1`` or
  ``Output2``), ``Category``.
- MM-RLHF-RewardBench (``yifanzhang114/MM-RLHF-RewardBench``): ``id``, ``prompt``, ``image``, ``chosen``,
  ``rejected`` (and ``chosen_reason``, ``rejected_reason``, which an RM does not read); several rows may share
  an id. A row with a ``video`` (and no image) is read with its video before the question
  (:mod:`rmkit.data.video`; a model that reads no video refuses it, named); its category is ``video``.

An image that cannot be read (a missing file, bytes that are no image) is a data error naming the file, row
and field; with ``--on-error skip`` the row is written to the rejects file and counted in ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rmkit.data import Rejects, read_records
from rmkit.data.images import describe, open_image
from rmkit.data.rows import RowReader, each_record
from rmkit.data.video import describe_video, open_video
from rmkit.data.vision import VisionExample
from rmkit.metrics.vision_benchmarks import (
    VL_GROUP_NAMES,
    VL_GROUPS,
    acc_combine,
    acc_figure,
    id_units,
    mmrb_category,
    mmrb_picks,
    mmrlhf_category,
    vl_combine,
    vl_dataset,
    vl_figure,
    vl_verdict,
)
from rmkit.suites.base import Item, Suite, answers, text


class VisionSuite(Suite):
    """A benchmark of image questions: scored by a model that reads images, each row's image opened from the
    field :attr:`image_fields` names (a path read beside the data file)."""

    image_fields: tuple[str, ...] = ("image",)

    @property
    def data(self) -> str:
        return f"{self.title} rows (images with questions)"

    def evaluates(self, kind: Any) -> bool:
        return kind.unit == self.unit and getattr(kind, "modality", "text") != "text"

    def items(
        self, path: str, name: str, columns: dict[str, str] | None, rejects: Rejects | None
    ) -> Iterator[Item]:
        base = Path(str(path).rstrip("/"))
        base = base if base.is_dir() else base.parent
        return each_record(
            read_records(path),
            source=str(path),
            columns=columns,
            rejects=rejects,
            convert=lambda record, r: self.item_at(record, r, name, base),
        )

    def item_at(self, record: dict[str, Any], r: RowReader, name: str, base: Path) -> Item:
        raise NotImplementedError

    def pair(
        self, record: dict[str, Any], r: RowReader, question: str, responses: list[str], base: Path
    ) -> VisionExample:
        """The example of one row: its image (the first of :attr:`image_fields` the row has) before the
        question, and the answers."""
        field = next((f for f in self.image_fields if record.get(f) is not None), self.image_fields[0])
        picture = open_image(r.get(record, field), r, field, base=base)
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return VisionExample(r.row, prompt, responses, True, images=[picture])


class VLRewardBench(VisionSuite):
    name = "vl-rewardbench"
    title = "VL-RewardBench"
    source = "MMInstruction/VL-RewardBench: cal.py (overall and macro accuracy over three groups)"
    subsets = VL_GROUP_NAMES
    columns = ("overall", "macro", *VL_GROUP_NAMES)
    image_fields = ("image", "image_path")

    def recognises(self, record: dict[str, Any]) -> bool:
        return {"id", "query", "response", "human_ranking"} <= set(record) and bool(
            {"image", "image_path"} & set(record)
        )

    def item_at(self, record: dict[str, Any], r: RowReader, name: str, base: Path) -> Item:
        responses = answers(r, record, "response", at_least=2)
        ranking = list(np.asarray(r.get(record, "human_ranking")).tolist())
        if len(responses) != 2 or sorted(ranking) != [0, 1]:
            raise r.error("human_ranking", f"expected two responses ranked [0, 1] or [1, 0], got {ranking!r}")
        row_id, image_path = str(r.get(record, "id")), record.get("image_path")
        dataset = vl_dataset(row_id, image_path if isinstance(image_path, str) else None)
        facts = {"better": ranking.index(0), "dataset": dataset, "image_path": image_path}
        example = self.pair(record, r, text(r, record, "query"), responses, base)
        return Item(r.row, row_id, VL_GROUPS[dataset], example, facts)

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        out: dict[str, list[float]] = {}
        for item, v in zip(items, values, strict=True):
            better = item.facts["better"]
            out.setdefault(item.subset, []).append(vl_verdict(v[better], v[1 - better]))
        return {k: np.asarray(v) for k, v in out.items()}

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        return vl_figure(units)

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return vl_combine(figures)

    def lookup(self, official: dict[str, Any]) -> dict[str, float | None]:
        subsets = official["subsets"]
        groups = {g: (subsets.get(g) or {}).get("score") for g in VL_GROUP_NAMES}
        return {"overall": official["score"], "macro": official.get("macro"), **groups}

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """What ``cal.py`` reads (``reparse=True``): each item with its ``ranking`` and a judgement naming the
        answer the model scored higher (``Answer N is better``; a tie names none and drops out)."""
        lines = []
        for item, v in zip(items, values, strict=True):
            better = item.facts["better"]
            verdict = vl_verdict(v[better], v[1 - better])
            pick = better if verdict == 1 else 1 - better
            said = "a tie, no answer preferred" if math.isnan(verdict) else f"Answer {pick + 1} is better"
            lines.append(
                {
                    "id": item.id,
                    "query": item.example.prompt[0]["content"][1]["text"],
                    "response": item.example.responses,
                    "image_path": item.facts["image_path"] or f"images/{item.facts['dataset']}/{item.id}",
                    "ranking": [0, 1] if better == 0 else [1, 0],
                    "rewards": [float(x) for x in v],
                    "meta": {"random_number": 0, "filter_choice": f"Overall Judgment: {said}"},
                }  # fmt: skip
            )
        return f"{self.name}_results.jsonl", lines


class MultimodalRewardBench(VisionSuite):
    name = "multimodal-rewardbench"
    title = "Multimodal RewardBench"
    source = "facebookresearch/multimodal_rewardbench: scripts/2_get_accuracy.py"
    columns = (
        "safety/bias", "safety/toxicity", "reasoning/math", "reasoning/coding",
    )  # fmt: skip
    image_fields = ("Image",)

    def recognises(self, record: dict[str, Any]) -> bool:
        return {"ID", "Text", "Image", "Output1", "Output2", "Better"} <= set(record)

    def item_at(self, record: dict[str, Any], r: RowReader, name: str, base: Path) -> Item:
        better = r.get(record, "Better")
        if better not in ("Output1", "Output2"):
            raise r.error("Better", f"expected 'Output1' or 'Output2', got {better!r}")
        row_id = str(r.get(record, "ID"))
        category = str((record.get("Meta") or {}).get("Category") or r.get(record, "Category"))
        pair = [text(r, record, "Output1"), text(r, record, "Output2")]
        example = self.pair(record, r, text(r, record, "Text"), pair, base)
        facts = {"label": "B" if better == "Output2" else "A", "category": category, "image": record["Image"]}
        return Item(r.row, row_id, mmrb_category(category, row_id), example, facts)

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        picks, coined = mmrb_picks([(v[0], v[1]) for v in values])
        out: dict[str, list[tuple[float, float]]] = {}
        for item, pick, coin in zip(items, picks, coined, strict=True):
            out.setdefault(item.subset, []).append((float(pick == item.facts["label"]), float(coin)))
        return {k: np.asarray(v).reshape(-1, 2) for k, v in out.items()}

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        """The accuracy, and how many verdicts the seeded coin gave (``coins``)."""
        return {"score": float(units[:, 0].mean()), "coins": int(units[:, 1].sum())}

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The accuracy over all rows (2_get_accuracy.py's ``all``)."""
        rows = sum(f["rows"] for f in figures.values())
        score = sum(f["score"] * f["rows"] for f in figures.values()) / rows if rows else None
        return {"sections": {}, "score": score}

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """The answers file that ``2_get_accuracy.py`` reads: each row's verdict as ``[[A]]`` or ``[[B]]`` (none
        on a tie: its coin decides), its label and category."""
        lines = []
        for item, (a, b) in zip(items, values, strict=True):
            output = "[[A]]" if a > b else "[[B]]" if b > a else ""
            image = (
                item.facts["image"] if isinstance(item.facts["image"], str) else item.example.image_refs[0]
            )
            lines.append({"ID": item.id, "Image": image, "Label": item.facts["label"], "output": output,
                          "rewards": [float(a), float(b)], "Meta": {"Category": item.facts["category"]}})  # fmt: skip
        return f"{self.name}_results.jsonl", lines


class MMRLHFRewardBench(VisionSuite):
    name = "mm-rlhf-rewardbench"
    title = "MM-RLHF-RewardBench"
    source = "MM-RLHF: llava/eval/cal_performance_mmreweard_bench.py (ACC and ACC+ per id)"
    columns = ("acc_plus", "mcq", "long", "short", "safety")

    def recognises(self, record: dict[str, Any]) -> bool:
        return {"id", "prompt", "chosen", "rejected", "chosen_reason"} <= set(record) and "image" in record

    def item_at(self, record: dict[str, Any], r: RowReader, name: str, base: Path) -> Item:
        video = record.get("video") if not record.get("image") else None
        path = describe(record.get("image")) if video is None else describe_video(video)
        pair = [text(r, record, "chosen"), text(r, record, "rejected")]
        if video is None:
            example = self.pair(record, r, text(r, record, "prompt"), pair, base)
        else:
            parts = [{"type": "video"}, {"type": "text", "text": text(r, record, "prompt")}]
            clip = open_video(video, r, "video", base=base)
            example = VisionExample(r.row, [{"role": "user", "content": parts}], pair, True, videos=[clip])
        subset = mmrlhf_category(path) or "other"
        return Item(r.row, str(r.get(record, "id")), subset, example, {"image": path})

    def units(self, items: Sequence[Item], values: Sequence[Sequence[float]]) -> dict[str, np.ndarray]:
        by: dict[str, tuple[list[str], list[bool]]] = {}
        for item, v in zip(items, values, strict=True):
            ids, right = by.setdefault(item.subset, ([], []))
            ids.append(item.id)
            right.append(bool(v[0] > v[1]))  # nan compares false: a pair without a score is wrong
        return {k: id_units(ids, right) for k, (ids, right) in by.items()}

    def figure(self, subset: str, units: np.ndarray) -> dict[str, float | None]:
        return acc_figure(units)

    def combine(self, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return acc_combine(figures)

    def lookup(self, official: dict[str, Any]) -> dict[str, float | None]:
        subsets = official["subsets"]
        cats = {c: (subsets.get(c) or {}).get("score") for c in self.columns[1:]}
        return {"acc_plus": official.get("acc_plus"), **cats}

    def results(
        self, model: str, items: Sequence[Item], values: Sequence[Sequence[float]], official: dict
    ) -> Any:
        """The answers file the benchmark's ``cal_performance_mmreweard_bench.py`` reads: each row with its
        ``rewards`` (chosen, rejected)."""
        lines = [
            {"id": item.id, "image": item.facts["image"], "rewards": [float(v[0]), float(v[1])]}
            for item, v in zip(items, values, strict=True)
        ]
        return f"{self.name}_results.jsonl", lines
