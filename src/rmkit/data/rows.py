"""Reading normalised rows: the record loop every normaliser shares (:func:`each_record`), the field
reader that names file, row and field in its errors (:class:`RowReader`), and what every normalised row
knows of its prompt and extra columns (:class:`RowMixin`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rmkit.data.readers import BadRecord
from rmkit.data.rejects import Rejects
from rmkit.errors import DataError

Message = dict[str, str]

_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "model": "assistant",
    "bot": "assistant",
}
# The subset rule, the same in every command: a row's subset (per-subset accuracy in train and eval) is the
# value of the column named by --subset-column, else of the first of these columns the row has.
SUBSET_COLUMNS = ("subset", "category")


class RowMixin:
    """What every normalised row (:class:`Example`, a PRM's and a rating's) reads of its ``prompt`` and
    pass-through ``extra`` columns."""

    prompt: list[Message]
    extra: dict[str, Any]
    subset_columns: tuple[str, ...] = SUBSET_COLUMNS  # where the subset rule looks without --subset-column

    def subset(self, column: str | None = None) -> str | None:
        """The row's subset (see :data:`SUBSET_COLUMNS`): the value of ``column`` when one is named, else of
        the first of ``subset_columns`` the row has; ``None`` when it is absent or empty."""
        for key in (column,) if column else self.subset_columns:
            value = self.extra.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    def prompt_value(self) -> str | list[Message]:
        """The prompt as a user would write it back out: a string for a single user turn, else the messages."""
        if len(self.prompt) == 1 and self.prompt[0]["role"] == "user":
            return self.prompt[0]["content"]
        return self.prompt


def each_record(
    records: Iterable[tuple[int, Any]],
    *,
    source: str,
    columns: dict[str, str] | None,
    rejects: Rejects | None,
    convert: Callable[[dict[str, Any], RowReader], Any],
) -> Iterator[Any]:
    """``convert`` applied to every good record (columns renamed first); a bad record, or one ``convert``
    refuses with a :class:`DataError`, raises, or with ``rejects`` is counted and written there."""
    for row, record in records:
        if isinstance(record, BadRecord):
            if rejects is None:
                raise record.error
            rejects.add(record.error, record.raw)
            continue
        if columns:
            record = {columns.get(k, k): v for k, v in record.items()}
        try:
            yield convert(record, RowReader(source, row))
        except DataError as e:
            if rejects is None:
                raise
            rejects.add(e, record)


@dataclass
class RowReader:
    """Reads the fields of one record, raising a :class:`DataError` that names the file, row and field."""

    source: str
    row: int

    def error(self, field: str | None, message: str) -> DataError:
        return DataError(message, file=self.source, row=self.row, field=field)

    def get(self, record: dict[str, Any], field: str) -> Any:
        if field not in record or record[field] is None:
            raise self.error(field, "missing field")
        return record[field]

    def text(self, record: dict[str, Any], field: str, value: Any = None) -> str:
        value = self.get(record, field) if value is None else value
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {type(value).__name__}")
        if not value.strip():
            raise self.error(field, "empty text")
        return value

    def messages(self, value: Any, field: str) -> list[Message]:
        """Validate a list of chat messages, accepting ``{role, content}`` and ShareGPT ``{from, value}``."""
        if not isinstance(value, list) or not value:
            raise self.error(field, f"expected a non-empty list of messages, got {type(value).__name__}")
        out = []
        for i, m in enumerate(value):
            if not isinstance(m, dict):
                raise self.error(f"{field}[{i}]", f"expected a message object, got {type(m).__name__}")
            role = m.get("role", m.get("from"))
            content = m.get("content", m.get("value"))
            if role not in _ROLES:
                raise self.error(f"{field}[{i}]", f"unknown role {role!r}: expected one of {sorted(_ROLES)}")
            if not isinstance(content, str):
                raise self.error(f"{field}[{i}]", f"expected string content, got {type(content).__name__}")
            out.append({"role": _ROLES[role], "content": content})
        return out

    def prompt(self, record: dict[str, Any], field: str = "prompt") -> list[Message]:
        value = self.get(record, field)
        if isinstance(value, list):
            return self.messages(value, field)
        return [{"role": "user", "content": self.text(record, field, value)}]

    def reply(self, value: Any, field: str) -> str:
        """A response given as a string, one assistant message, or a one-message list."""
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, dict):
            msgs = self.messages([value], field)
            if msgs[0]["role"] != "assistant":
                raise self.error(field, f"expected an assistant message, got role '{msgs[0]['role']}'")
            value = msgs[0]["content"]
        if not isinstance(value, str):
            raise self.error(field, f"expected a string or an assistant message, got {type(value).__name__}")
        if not value.strip():
            raise self.error(field, "empty response")
        return value
