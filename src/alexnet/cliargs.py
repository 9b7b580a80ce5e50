"""Parsing helpers shared by every sub-command and by dataset specs: ``KEY=VALUE`` lists, sizes,
and one plain-text table printer."""

from __future__ import annotations

from typing import Iterable, Sequence

from .errors import UserError


def parse_value(text: str):
    """``"true"`` -> True, ``"3"`` -> 3, ``"0.5"`` -> 0.5, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false", "on", "off", "yes", "no"):
        return low in ("true", "on", "yes")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_kv(items: Iterable[str] | None, *, what: str = "option") -> dict:
    """``["towers=1", "lrn=false", "dropout=0.3"]`` -> ``{"towers": 1, "lrn": False, "dropout": 0.3}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected {what} as KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_input_size(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-size takes C,H,W (e.g. 3,227,227), got {text!r}") from None
    if min(c, h, w) < 1:
        raise UserError(f"--input-size must be positive, got {text!r}")
    return c, h, w


def format_table(headers: Sequence[str], rows: Iterable[Sequence], *, align: str = "",
                 footer: Iterable[Sequence] = ()) -> str:
    """A plain-text table: columns as wide as their widest cell; ``align`` has one character per
    column, ``l`` or ``r`` (default: left for the first column, right for the others); ``footer``
    rows come after a second rule (totals)."""
    rows = [[str(c) for c in r] for r in rows]
    footer = [[str(c) for c in r] for r in footer]
    widths = [max([len(h)] + [len(r[i]) for r in rows + footer]) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(headers), rule, *(line(r) for r in rows)]
    if footer:
        out += [rule, *(line(r) for r in footer)]
    return "\n".join(out)
