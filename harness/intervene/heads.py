"""Heads as values: ``L12H3`` names head 3 of layer 12; a head set is a sorted, duplicate-free collection of them.

Grammar (comma or whitespace separated): ``L12H3`` one head, ``L12H0-3`` heads 0..3 of layer 12, ``L2-4H1`` head 1
of layers 2..4, ``L12H*`` every head of layer 12 (needs the model shape). Ranges are inclusive.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from ..models.arch import ModelShape

if TYPE_CHECKING:
    import torch

_TOKEN = re.compile(r"^L(\d+)(?:-(\d+))?H(\*|\d+)(?:-(\d+))?$")


@dataclass(frozen=True, order=True)
class Head:
    """One attention head, identified by (layer, head)."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, text: str) -> "Head":
        heads = HeadSet.parse(text)
        if len(heads) != 1:
            raise ValueError(f"{text!r} names {len(heads)} heads, expected exactly one")
        return heads.heads[0]


class HeadSet:
    """An immutable, sorted set of heads; printed and parsed as ``L0H1,L3H2``."""

    __slots__ = ("heads",)

    def __init__(self, heads: Iterable[Head | tuple[int, int] | str] = ()) -> None:
        items: set[Head] = set()
        for h in heads:
            if isinstance(h, Head):
                items.add(h)
            elif isinstance(h, str):
                items.update(HeadSet.parse(h).heads)
            else:
                layer, head = h
                items.add(Head(int(layer), int(head)))
        for h in items:
            if h.layer < 0 or h.head < 0:
                raise ValueError(f"negative index in head {h}")
        self.heads: tuple[Head, ...] = tuple(sorted(items))

    @classmethod
    def parse(cls, text: str, shape: ModelShape | None = None) -> "HeadSet":
        """Parse ``"L1H2, L3H0-2 L4H*"``; validated against ``shape`` when given (needed for ``H*``). An empty spec is
        an error, so a blank ``--heads`` never silently means "ablate nothing" (the empty set is ``HeadSet()``)."""
        tokens = [t for t in re.split(r"[,\s]+", text.strip()) if t]
        if not tokens:
            raise ValueError(f"empty head spec {text!r}: name at least one head, like L12H3 or L12H0-3")
        heads: list[Head] = []
        for token in tokens:
            m = _TOKEN.match(token.upper())
            if not m:
                raise ValueError(f"cannot parse head {token!r}: expected forms like L12H3, L12H0-3, L2-4H1, L12H*")
            l0, l1, h0, h1 = m.groups()
            layers = range(int(l0), int(l1 or l0) + 1)
            if h0 == "*":
                if shape is None:
                    raise ValueError(f"{token!r} needs the model shape to expand H*")
                head_ids: range = range(shape.n_heads)
            else:
                head_ids = range(int(h0), int(h1 or h0) + 1)
            if not layers or not head_ids:
                raise ValueError(f"empty range in head {token!r}")
            heads.extend(Head(layer, h) for layer in layers for h in head_ids)
        result = cls(heads)
        if shape is not None:
            result.validate(shape)
        return result

    def validate(self, shape: ModelShape) -> "HeadSet":
        """Raise a ValueError naming the model's shape if any head does not exist in it."""
        bad = [h for h in self.heads if h.layer >= shape.n_layers or h.head >= shape.n_heads]
        if bad:
            raise ValueError(
                f"unknown head{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad[:5]))}"
                f"{' ...' if len(bad) > 5 else ''} for {shape} "
                f"(valid: L0..L{shape.n_layers - 1}, H0..H{shape.n_heads - 1})"
            )
        return self

    def by_layer(self) -> dict[int, tuple[int, ...]]:
        """Head indices grouped by layer, layers ascending (the order a forward pass reaches them)."""
        out: dict[int, list[int]] = {}
        for h in self.heads:
            out.setdefault(h.layer, []).append(h.head)
        return {layer: tuple(hs) for layer, hs in out.items()}

    def layer_counts(self) -> dict[int, int]:
        """How many heads the set has in each layer (what a layer-matched random set must reproduce)."""
        return {layer: len(hs) for layer, hs in self.by_layer().items()}

    def __iter__(self) -> Iterator[Head]:
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            item = Head.parse(item)
        return item in set(self.heads)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeadSet) and self.heads == other.heads

    def __hash__(self) -> int:
        return hash(self.heads)

    def __or__(self, other: "HeadSet") -> "HeadSet":
        return HeadSet(self.heads + other.heads)

    def __and__(self, other: "HeadSet") -> "HeadSet":
        return HeadSet(set(self.heads) & set(other.heads))

    def __str__(self) -> str:
        return ",".join(map(str, self.heads))

    def __repr__(self) -> str:
        return f"HeadSet({str(self)!r})"


def all_heads(shape: ModelShape) -> HeadSet:
    """Every head of the model, in (layer, head) order."""
    return HeadSet((layer, h) for layer in range(shape.n_layers) for h in range(shape.n_heads))


def as_headset(heads: "HeadSet | str | Iterable", shape: ModelShape | None = None) -> HeadSet:
    """Coerce a string / iterable / HeadSet into a validated HeadSet."""
    if isinstance(heads, str):
        return HeadSet.parse(heads, shape)
    hs = heads if isinstance(heads, HeadSet) else HeadSet(heads)
    return hs.validate(shape) if shape is not None else hs


def top_heads(scores: "torch.Tensor", k: int, *, exclude: HeadSet | None = None) -> HeadSet:
    """The ``k`` highest-scoring heads of a ``[n_layers, n_heads]`` score map (ties: lower layer, then head, first);
    ``exclude`` heads are skipped."""
    import torch

    if not 0 <= k <= scores.numel():
        raise ValueError(f"k must be in 0..{scores.numel()} (the heads of the {list(scores.shape)} score map), "
                         f"got {k}")
    n_heads = scores.shape[1]
    banned = set(exclude.heads) if exclude is not None else set()
    order = torch.argsort(-scores.flatten().double(), stable=True).tolist()
    chosen = [Head(i // n_heads, i % n_heads) for i in order if Head(i // n_heads, i % n_heads) not in banned]
    return HeadSet(chosen[:k])


def random_headset(shape: ModelShape, rng: "random.Random | int | str", *, like: HeadSet | None = None,
                   k: int | None = None, exclude: HeadSet | None = None, borrow: bool = False) -> HeadSet:
    """A random head set: matched to ``like``'s per-layer counts, or ``k`` heads drawn uniformly from the model.

    The one sampler of every random control (the ablation study's nulls and the DPS random heads). ``rng`` is a
    ``random.Random`` or a seed; ``exclude`` heads are never drawn (e.g. the named set itself, a disjoint control).
    A layer with fewer drawable heads than ``like`` has there is an error; with ``borrow`` its shortfall is drawn from
    the nearest layers that still have free heads (the lower first at equal distance), after every layer's own draw
    (:func:`moved_heads` says where). Without a shortfall the draw is the same with or without ``borrow``.
    """
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    banned = set(exclude.heads) if exclude is not None else set()
    if like is not None:
        chosen: list[Head] = []
        short: dict[int, int] = {}
        for layer, count in like.layer_counts().items():
            pool = [Head(layer, h) for h in range(shape.n_heads) if Head(layer, h) not in banned]
            if count > len(pool) and not borrow:
                raise ValueError(f"layer {layer} has {len(pool)} drawable heads, {count} needed (borrow=True takes "
                                 f"the rest from the nearest layers)")
            chosen.extend(rng.sample(pool, min(count, len(pool))))
            if count > len(pool):
                short[layer] = count - len(pool)
        for layer, need in short.items():
            taken = set(chosen) | banned
            for near in sorted(range(shape.n_layers), key=lambda other: (abs(other - layer), other)):
                free = [Head(near, h) for h in range(shape.n_heads) if Head(near, h) not in taken]
                got = rng.sample(free, min(need, len(free)))
                chosen.extend(got)
                need -= len(got)
                if not need:
                    break
            if need:
                raise ValueError(f"the model has too few drawable heads for {like} ({need} short)")
        return HeadSet(chosen)
    if k is None:
        raise ValueError("random_headset needs like= (layer-matched) or k= (uniform)")
    pool = [h for h in all_heads(shape) if h not in banned]
    return HeadSet(rng.sample(pool, k))


def moved_heads(like: HeadSet, drawn: HeadSet) -> str:
    """Where a layer-matched draw departs from ``like``'s layer counts, e.g. ``L5-2,L4+1,L6+1`` ("" where it does not):
    the record of a borrowed shortfall."""
    want, got = like.layer_counts(), drawn.layer_counts()
    delta = {layer: got.get(layer, 0) - want.get(layer, 0) for layer in sorted(set(want) | set(got))}
    return ",".join(f"L{layer}{d:+d}" for layer, d in sorted(delta.items(), key=lambda x: (x[1] > 0, x[0])) if d)

@dataclass(frozen=True)
class CopyHeads:
    """Whether two head families' top-k are one set of heads: their overlap, shared heads, union, and the verdict."""

    overlap: float  # shared heads / the smaller set's size
    shared: HeadSet
    union: HeadSet
    merged: bool  # overlap >= the threshold: they count once, as their union


def copy_heads(a: HeadSet, b: HeadSet, *, min_overlap: float = 0.5) -> CopyHeads:
    """Retrieval and induction top-k counted once where they share at least ``min_overlap`` of their heads: then they
    enter a family as one set, their union (two tests of nearly the same heads are one test counted twice)."""
    if not len(a) or not len(b):
        raise ValueError(f"copy_heads needs two non-empty head sets, got {len(a)} and {len(b)} heads")
    shared = a & b
    overlap = len(shared) / min(len(a), len(b))
    return CopyHeads(overlap, shared, a | b, overlap >= min_overlap)
