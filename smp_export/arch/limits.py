"""Plausible ranges of config.json's sizes, checked before anything is allocated.

A size is refused when it exceeds its limit here (``ConfigLimits``), with the typed error
naming config.json and the field. The defaults cover every published BERT-family encoder
with room to spare (BERT-large: 24 layers, hidden 1024, 16 heads, 4096 inner, 30,522 tokens,
512 positions; XLM-R: 250,002 tokens); ``smp-export --config-limit FIELD=N`` raises one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class ConfigLimits:
    """The largest value accepted for each ``EncoderDims`` size."""

    layers: int = 256
    hidden: int = 16_384
    heads: int = 1_024
    intermediate: int = 65_536
    vocab_size: int = 1_048_576
    type_vocab_size: int = 1_024
    max_positions: int = 65_536

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> "ConfigLimits":
        """``["layers=512", ...]`` over the defaults; ValueError naming a bad pair."""
        limits = cls()
        names = {f.name for f in fields(cls)}
        for pair in pairs:
            name, sep, value = pair.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"{pair!r}: expected FIELD=N with FIELD one of {', '.join(sorted(names))}")
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"{pair!r}: {value!r} is not an integer") from None
            if number < 1:
                raise ValueError(f"{pair!r}: a limit must be >= 1")
            limits = replace(limits, **{name: number})
        return limits


DEFAULT_LIMITS = ConfigLimits()
