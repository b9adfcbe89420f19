"""Identifiers: a type prefix plus 24 random base32 characters (~120 bits), sortable by creation time."""

from __future__ import annotations

import base64
import os
import time

__all__ = ["new_id", "new_out_no"]


def _token() -> str:
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    return base64.b32encode(stamp + os.urandom(9)).decode().lower().rstrip("=")


def new_id(prefix: str) -> str:
    return f"{prefix}_{_token()}"


def new_out_no(prefix: str) -> str:
    """Provider-facing merchant numbers (out_trade_no, out_refund_no): 6-32 chars of [0-9A-Za-z]."""
    return (prefix + _token()).upper()[:32]
