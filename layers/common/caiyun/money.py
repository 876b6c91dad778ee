"""Money is integer fen everywhere; this is how it is shown to people."""

from __future__ import annotations


def yuan(fen: int) -> str:
    """Integer fen as a yuan amount for people to read: ``26800`` → ``268.00``."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"
