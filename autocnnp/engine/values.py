"""Parsing of the small text values configs carry, and the did-you-mean hint for a name that
is not one of the known ones (shared by every package)."""

from __future__ import annotations

import difflib

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def parse_bool(text: str) -> bool:
    """``true/1/yes/on`` or ``false/0/no/off`` (any case); ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...], otherwise: str = ".") -> str:
    """``"; did you mean 'x'?"`` for a near-miss (any case), else ``otherwise``."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[match[0]]!r}?" if match else otherwise


def unknown(kind: str, name: str, choices: list[str] | tuple[str, ...],
            hints: list[str] | tuple[str, ...] | dict[str, str] = ()) -> str:
    """``unknown KIND 'name'; did you mean 'x'? Known: a, b`` (hints also feed the guess).

    ``hints`` given as a dict maps accepted aliases to their canonical names: a near-miss of
    an alias suggests the canonical name (``lerning_rate`` -> ``lr``, not ``learning_rate``).
    """
    canonical = hints if isinstance(hints, dict) else {}
    guess = did_you_mean(name, list(choices) + list(hints))
    for alias, target in canonical.items():
        if guess == f"; did you mean {alias!r}?":
            guess = f"; did you mean {target!r}?"
    return f"unknown {kind} {name!r}{guess} Known: {', '.join(choices)}"
