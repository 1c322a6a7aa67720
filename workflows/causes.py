"""What failed, in words: the innermost cause of an activity's or a child's failure (the
activity's own message, not Temporal's wrapper), for the record and for people."""

from __future__ import annotations


def cause_text(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)
