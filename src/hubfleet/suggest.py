"""'Did you mean ...?' for a name that is not known, in one wording everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` was most likely meant to be, if any is close enough."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion(name: str, known: Sequence[str], listing: str, otherwise: str) -> str:
    """`did you mean 'x'?` for the closest known name, else `<listing>: <the known names, in order>`, else
    (nothing is known) `otherwise`."""
    close = closest(name, known)
    if close:
        return f"did you mean '{close}'?"
    if known:
        return f"{listing}: {', '.join(known)}"
    return otherwise


def did_you_mean(name: str, known: Iterable[str], what: str) -> str:
    """`did you mean 'x'?`, else the known `what` (a plural such as "hubs"), else that there are none."""
    return suggestion(name, sorted(known), f"known {what}", f"no {what} are defined")
