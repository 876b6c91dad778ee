"""Check digits of the numbers residents type: resident ID numbers and bank cards.

Plain functions, shared by the request models (which refuse a mistyped number before anything
else happens) and the sandbox bank (which checks what it is sent, as ICBC does).
"""

from __future__ import annotations

import re

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def resident_id_valid(value: str) -> bool:
    """Whether ``value`` is a GB 11643 resident ID number: 17 digits and the check character
    of their weighted sum mod 11 (an upper-case ``X`` for 10)."""
    if not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17]


def luhn_valid(value: str) -> bool:
    """Whether ``value`` is 12–19 digits whose Luhn checksum holds (every bank card's)."""
    if not re.fullmatch(r"[0-9]{12,19}", value):
        return False
    total = 0
    for index, digit in enumerate(reversed(value)):
        n = int(digit)
        if index % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0
