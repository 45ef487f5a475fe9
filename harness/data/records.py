"""The one record type for personalization examples: input, gold output and the user's profile."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # planted.py builds Examples, so it is imported for the annotation only
    from .planted import Planting


class DataError(ValueError):
    """Bad or inconsistent data: the message names the source, row and field."""


@dataclass(frozen=True)
class ProfileItem:
    """One earlier writing of the user; `position` is its chronological index (higher = more recent)."""

    text: str
    fields: dict[str, str] = field(default_factory=dict)
    position: int = 0

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
    planted: Planting | None = None  # the user's planted rule, in a planted corpus (harness.data.planted)

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
        for item in self.profile:
            if not isinstance(item, ProfileItem):
                raise DataError(f"profile of example {self.example_id} holds {type(item).__name__}, not ProfileItem")
