"""argparse `type=` helpers: an out-of-range value becomes argparse's one-line usage error (exit 2)
at parse time, before any model is loaded."""

from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def at_least(minimum: int):
    """`type=` for an integer >= `minimum` (e.g. 2 samples per prompt for a diversity figure)."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _comma_list(text: str, parse, what: str) -> tuple:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}")
    return tuple(parse(p) for p in parts)


def positive_int_list(text: str) -> tuple[int, ...]:
    """A comma-separated list of integers >= 1, e.g. '4,8,20'."""
    return _comma_list(text, positive_int, "integers")


def stage_count_list(text: str) -> tuple[int | tuple[int, ...], ...]:
    """Comma-separated integers >= 1, each one count or one per stage joined by ':', e.g.
    '8000,3000:5000,2000'."""
    def item(part: str) -> int | tuple[int, ...]:
        counts = tuple(positive_int(c) for c in part.split(":"))
        return counts[0] if len(counts) == 1 else counts

    return _comma_list(text, item, "integers (or HIGH:LOW pairs)")


def choice_list(*choices: str):
    """A comma-separated list of words from `choices`, e.g. 'phased,joint,phased'."""
    def one(word: str) -> str:
        if word not in choices:
            raise argparse.ArgumentTypeError(f"{word!r} is not one of {', '.join(choices)}")
        return word

    def parse(text: str) -> tuple[str, ...]:
        return _comma_list(text, one, f"words from {{{', '.join(choices)}}}")

    return parse


def positive_float_list(text: str) -> tuple[float, ...]:
    """A comma-separated list of finite numbers > 0, e.g. '1,5,5'."""
    return _comma_list(text, positive_float, "numbers")


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a loss weight)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a shift)."""
    value = nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value
