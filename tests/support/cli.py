"""Arguments for calling a command's function directly, as argparse would build them."""

from __future__ import annotations

import argparse
from typing import Any


def audit_args(**over: Any) -> argparse.Namespace:
    values = {"remote": False, "fix": False, "json": True, "stuck_attempts": 3, "stuck_age": 1000}
    return argparse.Namespace(**{**values, **over})
