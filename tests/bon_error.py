"""The BonError an in-process call raises, checked to be one line (what a command would print)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bon.errors import BonError


def bon_error(fn: Callable[[], Any]) -> str:
    with pytest.raises(BonError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message
