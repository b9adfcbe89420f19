"""Order and refund state machines. They only move forward."""

from __future__ import annotations

__all__ = ["ORDER_TRANSITIONS", "REFUND_TRANSITIONS", "can_transition", "refund_can_transition"]

#: creating -> pending -> paid -> partially_refunded -> refunded; creating/pending -> closed;
#: closed -> paid only when the provider reports a payment after our close (an exception to review).
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    "creating": frozenset({"pending", "paid", "closed"}),
    "pending": frozenset({"paid", "closed"}),
    "closed": frozenset({"paid"}),
    "paid": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"partially_refunded", "refunded"}),
    "refunded": frozenset(),
}

REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"processing", "succeeded", "failed"}),
    "processing": frozenset({"succeeded", "failed"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in ORDER_TRANSITIONS.get(current, frozenset())


def refund_can_transition(current: str, target: str) -> bool:
    return target in REFUND_TRANSITIONS.get(current, frozenset())
