"""The one record type for personalization examples: input, gold output and the user's profile."""
from __future__ import annotations

import dataclasses
import itertools
import operator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import UserError


class Planted(Protocol):
    """What a planted corpus stores on ``Example.planted`` (``harness.data.planted.Planting``, which builds Examples and
    so is not imported here): the user's rule, whether it was applied (False: a control user), and where."""

    @property
    def rule(self) -> Any: ...
    @property
    def applied(self) -> bool: ...
    @property
    def output_spans(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def family(self) -> str: ...
    @property
    def control(self) -> bool: ...


class DataError(UserError, ValueError):
    """Bad or inconsistent data: the message names the source, row and field."""


@dataclass(frozen=True)
class ProfileItem:
    """One earlier writing of the user; `position` is its chronological index (higher = more recent), `doc_id` the
    document it comes from (a speech, address, debate, e-mail; '' when the source does not say)."""

    text: str
    fields: dict[str, str] = field(default_factory=dict)
    position: int = 0
    doc_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise DataError(f"profile item at position {self.position} has empty text")
        if self.position < 0:
            raise DataError(f"profile item position must be >= 0, got {self.position}")


@dataclass(frozen=True)
class Example:
    """A user-attributed task: the model sees `input` (+ `profile`) and should write `output`."""

    example_id: str
    user_id: str
    input: str
    output: str
    profile: tuple[ProfileItem, ...]
    task: str
    split: str
    lead: str = ""  # text the gold output continues (e.g. a paragraph's first sentence): what a prefill shows
    planted: Planted | None = None  # the user's planted rule, in a planted corpus (harness.data.planted)
    doc_id: str = ""  # the document the gold text comes from ('' when the source does not say: its own document)
    covariate: float | None = None  # the corpus covariate a ``nearest`` donor is matched on (sotu: the year)
    same_doc: tuple[ProfileItem, ...] = ()  # the user's items from this example's own document (see profile_docs)

    def __post_init__(self) -> None:
        if not self.example_id:
            raise DataError("example with an empty example_id")
        if not str(self.user_id).strip():
            raise DataError(f"empty user_id in example {self.example_id}")
        if not isinstance(self.input, str) or not self.input.strip():
            raise DataError(f"empty input in example {self.example_id}")
        if not isinstance(self.output, str) or not self.output.strip():
            raise DataError(f"empty output in example {self.example_id}")
        object.__setattr__(self, "profile", tuple(self.profile))
        if not self.profile:
            raise DataError(f"empty profile for user {self.user_id} in example {self.example_id}")
        object.__setattr__(self, "same_doc", tuple(self.same_doc))
        kinds = set(map(type, self.profile)) | set(map(type, self.same_doc))  # C-level: profiles can be long
        if not kinds <= {ProfileItem}:
            bad = next(k for k in kinds if k is not ProfileItem)
            raise DataError(f"profile of example {self.example_id} holds {bad.__name__}, not ProfileItem")

    def shares_document(self, item: ProfileItem) -> bool:
        """Whether ``item`` comes from this example's own document (never when either does not say)."""
        return bool(self.doc_id) and item.doc_id == self.doc_id


PROFILE_DOCS = ("other", "any")


def check_profile_docs(profile_docs: str) -> None:
    """Refuse a ``--profile-docs`` value that is not one of ``PROFILE_DOCS``, naming it."""
    if profile_docs not in PROFILE_DOCS:
        raise DataError(f"unknown --profile-docs {profile_docs!r}; choose {' or '.join(PROFILE_DOCS)}")


def restrict_profile_docs(examples: list[Example], profile_docs: str) -> list[Example]:
    """Examples whose profile holds only the user's *other* documents (``other``: the default; an example left with
    no profile is dropped) or every item the loader found (``any``, same-document items included). Either way the
    items of the example's own document are also kept apart in ``same_doc``, for the same-document signal."""
    check_profile_docs(profile_docs)
    out = []
    for e in examples:
        own = [bool(e.doc_id) and d == e.doc_id for d in map(_DOC_ID, e.profile)]
        if not any(own):
            out.append(dataclasses.replace(e, same_doc=()) if e.same_doc else e)
            continue
        same = tuple(itertools.compress(e.profile, own))
        kept = e.profile if profile_docs == "any" else tuple(itertools.compress(e.profile, [not o for o in own]))
        if kept:
            out.append(dataclasses.replace(e, profile=kept, same_doc=same))
    return out


_DOC_ID = operator.attrgetter("doc_id")
