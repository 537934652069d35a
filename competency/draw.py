"""The seeded, stratified draw of a test's cells (no Django here): the same pool, definition and seed
always draw the same cells in the same order."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Shortfall:
    code: str
    wanted: int
    available: int

    def __str__(self):
        return f"{self.code}: {self.available} decided cell(s), {self.wanted} wanted"


class DrawRefused(ValueError):
    """The pool cannot give what the definition asks; the message names what is missing."""

    def __init__(self, message: str, shortfalls: list[Shortfall] | None = None):
        super().__init__(message)
        self.shortfalls = shortfalls or []


def draw(pool: dict[str, list[int]], *, size: int, minimums: dict[str, int], seed: int) -> list[tuple[int, str]]:
    """``(cell id, class)`` pairs: at least ``minimums[c]`` cells of each named class, the rest drawn
    at random from the other decided cells of the named classes (all classes of the pool when none is
    named), shuffled. Every class with fewer decided cells than its minimum is named in the refusal,
    never silently dropped."""
    if size < 1:
        raise DrawRefused("A test needs at least one cell.")
    classes = sorted(minimums) if minimums else sorted(pool)
    shortfalls = [Shortfall(c, n, len(pool.get(c, []))) for c, n in sorted(minimums.items())
                  if len(pool.get(c, [])) < n]
    if shortfalls:
        raise DrawRefused("Too few decided cells: " + "; ".join(map(str, shortfalls)) + ".", shortfalls)
    if sum(minimums.values()) > size:
        raise DrawRefused(f"The class minimums add up to {sum(minimums.values())}, more than the test's {size} cells.")
    available = sum(len(pool.get(c, [])) for c in classes)
    if available < size:
        raise DrawRefused(f"Only {available} decided cell(s) in the chosen classes for a test of {size}.")
    rng = random.Random(seed)
    chosen: list[tuple[int, str]] = []
    rest: list[tuple[int, str]] = []
    for code in classes:
        ids = sorted(pool.get(code, []))
        rng.shuffle(ids)
        k = minimums.get(code, 0)
        chosen += [(i, code) for i in ids[:k]]
        rest += [(i, code) for i in ids[k:]]
    rest.sort()
    rng.shuffle(rest)
    chosen += rest[:size - len(chosen)]
    rng.shuffle(chosen)
    return chosen
