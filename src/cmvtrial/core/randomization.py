"""Concealed randomization lists: stratified permuted blocks of random size, and the balance report.

Why permuted blocks of *random* size: fixed blocks let a site that has seen the first few
allocations of a block guess the last one; drawing each block's size from the protocol's set
(for example 2, 4, 6) keeps balance within a stratum while hiding where a block ends
(ICH E9 §2.3.1; DESIGN.md §3 step 3). Everything trial-specific — the arms and their integer
ratio, the block sizes — comes in as arguments; in production from the protocol's
``randomization`` section.

Reproducible from a secret seed, on any machine and any Python version, for audit: the random
numbers of a stratum come from :class:`HashStream`, a counter-mode SHA-256 stream keyed by the
seed and the stratum name (see :func:`stratum_key`). Python's ``random.Random`` guarantees only
``random()`` across versions, not ``shuffle``/``choice``; a hash stream guarantees everything and an
auditor can re-derive a list from the documented recipe in ``docs/randomization.md`` without this
code.

Pure: no clock, no I/O, no global random state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from cmvtrial.errors import InvalidInput

#: Version tag mixed into every stream key; changing the recipe means a new tag, never a silent change.
STREAM_RECIPE = "cmvtrial.permuted_blocks.v1"
#: The stratum name used when a protocol has no strata (one list for the whole trial).
UNSTRATIFIED = "all"

_WORD_BYTES = 8
_WORD_SPACE = 1 << (8 * _WORD_BYTES)


# --------------------------------------------------------------------------------------------
# The random stream


def stratum_key(seed: str | int, stratum: str) -> bytes:
    """The 32-byte key of a stratum's stream: SHA-256 of a JSON array [recipe, seed, stratum].

    JSON keeps the three parts unambiguous (no separator a seed could contain); an integer seed is
    written in decimal, so seed ``42`` and seed ``"42"`` give the same list.
    """
    text = json.dumps([STREAM_RECIPE, str(seed), stratum], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).digest()


class HashStream:
    """A deterministic stream of random numbers: block *i* is SHA-256(key ‖ i as 8 bytes big-endian).

    Each block yields four 64-bit big-endian words, consumed in order. ``randbelow`` uses rejection
    sampling (no modulo bias); ``random`` takes the top 53 bits of one word. The stream also serves
    as the ``rng`` of :func:`cmvtrial.core.minimization.minimization_assign`, which needs only
    ``random()``.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or not key:
            raise InvalidInput("a random stream needs a non-empty byte key", field="key")
        self._key = key
        self._counter = 0
        self._buffer = b""

    @classmethod
    def for_stratum(cls, seed: str | int, stratum: str) -> HashStream:
        return cls(stratum_key(seed, stratum))

    def _word(self) -> int:
        if not self._buffer:
            block = self._key + self._counter.to_bytes(8, "big")
            self._buffer = hashlib.sha256(block).digest()
            self._counter += 1
        word, self._buffer = self._buffer[:_WORD_BYTES], self._buffer[_WORD_BYTES:]
        return int.from_bytes(word, "big")

    def randbelow(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        if n < 1:
            raise InvalidInput("randbelow needs a positive bound", field="n", value=n)
        limit = _WORD_SPACE - (_WORD_SPACE % n)
        while True:
            word = self._word()
            if word < limit:
                return word % n

    def random(self) -> float:
        """A uniform float in [0, 1) with 53 random bits."""
        return (self._word() >> 11) / float(1 << 53)

    def shuffle(self, items: list[str]) -> None:
        """Fisher-Yates in place, from the last position down."""
        for i in range(len(items) - 1, 0, -1):
            j = self.randbelow(i + 1)
            items[i], items[j] = items[j], items[i]


# --------------------------------------------------------------------------------------------
# Validation shared with minimization


def validate_ratio(arms_ratio: Mapping[str, int]) -> dict[str, int]:
    """The ratio as a dict sorted by arm id (so the list never depends on mapping order)."""
    if not isinstance(arms_ratio, Mapping) or len(arms_ratio) < 2:
        raise InvalidInput(
            "the allocation ratio needs at least two arms", field="ratio", value=arms_ratio
        )
    checked: dict[str, int] = {}
    for arm in sorted(arms_ratio):
        weight = arms_ratio[arm]
        if not isinstance(arm, str) or not arm:
            raise InvalidInput("an arm id must be a non-empty string", field="ratio", value=arm)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise InvalidInput(
                f"the ratio weight of arm '{arm}' must be a positive integer",
                field=f"ratio.{arm}",
                value=weight,
            )
        checked[arm] = weight
    return checked


def validate_block_sizes(block_sizes: Sequence[int], ratio: Mapping[str, int]) -> list[int]:
    """Distinct block sizes, sorted; each must be a positive multiple of the ratio's sum."""
    total = sum(ratio.values())
    if isinstance(block_sizes, (str, bytes)) or not block_sizes:
        raise InvalidInput("at least one block size is required", field="block_sizes", value=block_sizes)
    sizes: set[int] = set()
    for size in block_sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % total:
            raise InvalidInput(
                f"block size {size!r} is not a positive multiple of the ratio sum {total}",
                field="block_sizes",
                value=size,
            )
        sizes.add(size)
    return sorted(sizes)


# --------------------------------------------------------------------------------------------
# Permuted block lists


@dataclass(frozen=True)
class ListEntry:
    """One position of a randomization list. ``sequence`` and ``block`` count from 1 per stratum."""

    sequence: int
    stratum: str
    block: int
    block_size: int
    arm: str

    def to_dict(self) -> dict[str, object]:
        return {
            "sequence": self.sequence,
            "stratum": self.stratum,
            "block": self.block,
            "block_size": self.block_size,
            "arm": self.arm,
        }


def generate_block_list(
    arms_ratio: Mapping[str, int],
    block_sizes: Sequence[int],
    n: int,
    seed: str | int,
    stratum: str = UNSTRATIFIED,
) -> list[ListEntry]:
    """The first ``n`` positions of the stratum's permuted-block list.

    For each block: draw its size uniformly from the distinct sorted ``block_sizes``
    (``randbelow``), fill it with each arm (sorted by id) repeated ``weight * size / sum`` times,
    then Fisher-Yates shuffle it. The list for ``n`` is a prefix of the list for any larger ``n``, so
    a service can extend a list without changing positions already used. The last block may be
    incomplete when ``n`` ends inside it.
    """
    ratio = validate_ratio(arms_ratio)
    sizes = validate_block_sizes(block_sizes, ratio)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidInput("the list length must be a whole number >= 0", field="n", value=n)
    if isinstance(seed, bool) or not isinstance(seed, (str, int)) or str(seed) == "":
        raise InvalidInput("the seed must be a non-empty string or an integer", field="seed")
    if not isinstance(stratum, str) or not stratum:
        raise InvalidInput("the stratum name must be a non-empty string", field="stratum", value=stratum)

    total = sum(ratio.values())
    stream = HashStream.for_stratum(seed, stratum)
    entries: list[ListEntry] = []
    block_number = 0
    while len(entries) < n:
        block_number += 1
        size = sizes[stream.randbelow(len(sizes))]
        block = [arm for arm, weight in ratio.items() for _ in range(weight * size // total)]
        stream.shuffle(block)
        for arm in block[: n - len(entries)]:
            entries.append(ListEntry(len(entries) + 1, stratum, block_number, size, arm))
    return entries


def stratum_name(strata: Sequence[str], levels: Mapping[str, object]) -> str:
    """The stratum a subject falls in, as the text that keys its list: ``site=01/steroid=high``.

    Factors in the protocol's order, each ``name=level``, joined by ``/``; no strata gives
    :data:`UNSTRATIFIED`. The name feeds the seed derivation, so it must not change for a trial
    in progress — hence one documented format. A factor without a level is InvalidInput.
    """
    parts = []
    for factor in strata:
        level = levels.get(factor)
        if level is None or str(level) == "":
            raise InvalidInput(f"no level for stratification factor '{factor}'", field=f"strata.{factor}")
        parts.append(f"{factor}={level}")
    return "/".join(parts) if parts else UNSTRATIFIED


# --------------------------------------------------------------------------------------------
# Balance


def ratio_imbalance(counts: Mapping[str, int], arms_ratio: Mapping[str, int]) -> Fraction:
    """How far counts are from the ratio: max over arms of count/weight minus the min.

    At 1:1 this is the largest difference in counts between two arms. Dividing by the weight makes
    the law "within a permuted block the imbalance never exceeds block size / ratio sum" hold for
    any ratio (it is at most half the largest block size, since the sum is at least 2).
    """
    scaled = [Fraction(counts.get(arm, 0), weight) for arm, weight in arms_ratio.items()]
    return max(scaled) - min(scaled)


@dataclass(frozen=True)
class BalanceReport:
    """Counts per arm per stratum and overall, with the imbalance of each (see ratio_imbalance)."""

    arms: tuple[str, ...]
    by_stratum: dict[str, dict[str, int]]
    overall: dict[str, int]
    imbalance_by_stratum: dict[str, Fraction]
    overall_imbalance: Fraction
    max_stratum_imbalance: Fraction
    total: int = field(default=0)

    def to_dict(self) -> dict[str, object]:
        return {
            "arms": list(self.arms),
            "total": self.total,
            "by_stratum": self.by_stratum,
            "overall": self.overall,
            "imbalance_by_stratum": {k: float(v) for k, v in self.imbalance_by_stratum.items()},
            "overall_imbalance": float(self.overall_imbalance),
            "max_stratum_imbalance": float(self.max_stratum_imbalance),
        }


def balance_report(
    allocations: Iterable[tuple[str, str]], arms_ratio: Mapping[str, int]
) -> BalanceReport:
    """Balance of allocations given as (stratum, arm) pairs; an unknown arm is InvalidInput."""
    ratio = validate_ratio(arms_ratio)
    by_stratum: dict[str, dict[str, int]] = {}
    overall = dict.fromkeys(ratio, 0)
    total = 0
    for stratum, arm in allocations:
        if arm not in ratio:
            raise InvalidInput(
                f"allocation to unknown arm '{arm}'; arms: {', '.join(ratio)}", field="arm", value=arm
            )
        counts = by_stratum.setdefault(stratum, dict.fromkeys(ratio, 0))
        counts[arm] += 1
        overall[arm] += 1
        total += 1
    imbalances = {stratum: ratio_imbalance(c, ratio) for stratum, c in sorted(by_stratum.items())}
    return BalanceReport(
        arms=tuple(ratio),
        by_stratum=dict(sorted(by_stratum.items())),
        overall=overall,
        imbalance_by_stratum=imbalances,
        overall_imbalance=ratio_imbalance(overall, ratio),
        max_stratum_imbalance=max(imbalances.values(), default=Fraction(0)),
        total=total,
    )


def weighted_pick(weights: Mapping[str, int | Fraction], u: float) -> str:
    """The key whose cumulative-weight interval holds ``u`` in [0, 1); keys taken in sorted order."""
    keys = sorted(weights)
    total = sum(Fraction(weights[k]) for k in keys)
    target = Fraction(u) * total
    running = Fraction(0)
    for key in keys:
        running += Fraction(weights[key])
        if target < running:
            return key
    return keys[-1]
