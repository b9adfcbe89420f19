"""Published test keys (never used in production) and helpers to read them."""

from pathlib import Path

KEYS = Path(__file__).parent


def read(name: str) -> str:
    return (KEYS / name).read_text()
