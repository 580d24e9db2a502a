"""One page of a keyset-paginated listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Pass back to get the next page; None on the last page.
    next_cursor: str | None
