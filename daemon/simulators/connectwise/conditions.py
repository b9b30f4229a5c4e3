"""The ConnectWise ``conditions`` / ``orderBy`` / ``fields`` grammar, for the simulator.

Covers what clients use in practice (../shared/reference/connectwise/NOTES.md
§2): ``field op value`` with ``= != < <= > >= contains like in`` (and ``not``
before ``like``, ``contains`` and ``in``), ``and`` / ``or`` (``and`` binds
tighter), parentheses, nested fields ``a/b``, strings in ``'…'`` or ``"…"``,
bare numbers, ``true`` / ``false`` / ``null``, lists ``(1, 2)`` and datetimes in
``[…]``. Field names and keywords are case-insensitive, string comparisons too
(inferred from ConnectWise's SQL Server collation; not documented). ``lastUpdated`` on any
record means ``_info/lastUpdated`` ("All objects react to the LastUpdated
query", §2). A malformed expression raises :class:`ConditionError`, which the
simulator answers as a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]


class ConditionError(ValueError):
    """A ``conditions`` / ``orderBy`` / ``fields`` expression could not be parsed."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lpar>\()|(?P<rpar>\))|(?P<comma>,)|
        (?P<op><=|>=|!=|<>|=|<|>)|
        (?P<date>\[[^\]]*\])|
        (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")|
        (?P<num>-?\d+(?:\.\d+)?(?![\w/]))|
        (?P<word>[A-Za-z_][\w/]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ConditionError(f"unexpected character at {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        tokens.append(Token(kind, m.group(kind)))
        pos = m.end()
    return tokens


def parse_datetime(text: str) -> datetime:
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConditionError(f"bad datetime [{text}]") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def lookup(record: Record, path: str) -> Any:
    """Value at a nested, case-insensitive ``a/b`` path (``None`` if absent)."""
    parts = path.split("/")
    if len(parts) == 1 and parts[0].lower() == "lastupdated" and "lastUpdated" not in record:
        parts = ["_info", "lastUpdated"]
    value: Any = record
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        key = part.lower()
        value = next((v for k, v in value.items() if k.lower() == key), None)
    return value


def _norm(value: Any, like: Any) -> Any:
    """Make a record value comparable with a literal of the same kind."""
    if isinstance(like, datetime) and isinstance(value, str):
        try:
            return parse_datetime(value)
        except ConditionError:
            return None
    if isinstance(value, str):
        return value.casefold()
    return value


def _compare(op: str, value: Any, literal: Any) -> bool:
    if op in ("=", "!="):
        equal = _norm(value, literal) == literal
        return equal if op == "=" else not equal
    if value is None or literal is None:
        return False
    left = _norm(value, literal)
    try:
        return bool(
            {
                "<": left < literal,
                "<=": left <= literal,
                ">": left > literal,
                ">=": left >= literal,
            }[op]
        )
    except TypeError:
        return False


def _like(value: Any, pattern: str) -> bool:
    if value is None:
        return False
    regex = "".join(".*" if ch in "%*" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, str(value).casefold(), re.DOTALL) is not None


class _Parser:
    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ConditionError("expression ends too early")
        self.i += 1
        return tok

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "word" and tok.text.lower() in words

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek() is not None:
            raise ConditionError(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return pred

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def unary(self) -> Predicate:
        if self.is_word("not"):
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        tok = self.peek()
        if tok is not None and tok.kind == "lpar":
            self.take()
            inner = self.or_expr()
            if self.take().kind != "rpar":
                raise ConditionError("missing )")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field = self.take()
        if field.kind != "word":
            raise ConditionError(f"expected a field name, got {field.text!r}")
        path = field.text
        negate = False
        if self.is_word("not"):
            self.take()
            negate = True
        tok = self.take()
        if tok.kind == "op":
            if negate:
                raise ConditionError("'not' must be followed by like, contains or in")
            op = "!=" if tok.text == "<>" else tok.text
            literal = self.literal()
            return lambda r: _compare(op, lookup(r, path), literal)
        word = tok.text.lower() if tok.kind == "word" else ""
        if word == "in":
            values = self.literal_list()
            pred: Predicate = lambda r: any(_compare("=", lookup(r, path), v) for v in values)  # noqa: E731
        elif word in ("contains", "like"):
            literal = self.literal()
            if not isinstance(literal, str):
                raise ConditionError(f"{word} needs a quoted string")
            pattern = f"%{literal}%" if word == "contains" else literal
            pred = lambda r: _like(lookup(r, path), pattern)  # noqa: E731
        else:
            raise ConditionError(f"unknown operator {tok.text!r} after {path}")
        return (lambda r: not pred(r)) if negate else pred

    def literal(self) -> Any:
        tok = self.take()
        if tok.kind == "str":
            quote = tok.text[0]
            return tok.text[1:-1].replace(quote * 2, quote).casefold()
        if tok.kind == "num":
            return float(tok.text) if "." in tok.text else int(tok.text)
        if tok.kind == "date":
            return parse_datetime(tok.text[1:-1])
        if tok.kind == "word" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        if tok.kind == "word" and tok.text.lower() == "null":
            return None
        raise ConditionError(f"expected a value, got {tok.text!r}")

    def literal_list(self) -> list[Any]:
        if self.take().kind != "lpar":
            raise ConditionError("'in' needs a list in parentheses")
        values = [self.literal()]
        while (tok := self.take()).kind == "comma":
            values.append(self.literal())
        if tok.kind != "rpar":
            raise ConditionError("missing ) after the list")
        return values


def compile_conditions(text: str | None) -> Predicate:
    """A predicate for a ``conditions`` string (everything matches when empty)."""
    if text is None or not text.strip():
        return lambda r: True
    return _Parser(tokenize(text)).parse()


def sort_records(records: list[Record], order_by: str | None) -> list[Record]:
    """``orderBy`` such as ``_info/lastUpdated desc, id asc`` (default: by id)."""
    keys: list[tuple[str, bool]] = []
    for part in (order_by or "id asc").split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise ConditionError(f"bad orderBy term {part!r}")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise ConditionError(f"orderBy direction must be asc or desc, not {words[1]!r}")
        keys.append((words[0], direction == "desc"))
    result = list(records)
    for path, desc in reversed(keys):
        # None sorts first ascending; tuples keep mixed None/values comparable.
        result.sort(key=lambda r, p=path: _sort_key(lookup(r, p)), reverse=desc)  # type: ignore[misc]
    return result


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.casefold())
    if isinstance(value, bool | int | float):
        return (2, value)
    return (3, str(value))


def project_fields(record: Record, fields: str | None) -> dict[str, Any]:
    """Only the ``fields`` listed (nested with ``/``), or the whole record."""
    if not fields:
        return dict(record)
    out: dict[str, Any] = {}
    for raw in fields.split(","):
        path = raw.strip()
        if not path:
            continue
        value = lookup(record, path)
        if value is None:
            continue
        parts = path.split("/")
        target = out
        source: Any = record
        for part in parts[:-1]:
            source = next((v for k, v in source.items() if k.lower() == part.lower()), {})
            name = next((k for k in record if k.lower() == part.lower()), part)
            target = target.setdefault(name, {})
        last = next(
            (
                k
                for k in (source if isinstance(source, Mapping) else {})
                if k.lower() == parts[-1].lower()
            ),
            parts[-1],
        )
        target[last] = value
    return out
