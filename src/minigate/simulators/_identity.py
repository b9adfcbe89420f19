"""The sandbox authority every identity simulator shares (Tencent FaceID, Baidu, Unisound).

An :class:`Authority` holds the records a name + ID check or a face comparison is answered from, and the queue of
overrides that force the next verdicts. Its control routes are the same in every simulator; what an outcome means
(an error code, a score, a late answer) stays with each simulator.

- ``POST /_sandbox/persons {"name", "id_number", "photo"?}`` registers a record: ``name`` must pass
  :func:`~minigate.identity.parse_name`, ``id_number`` GB 11643 (:func:`~minigate.identity.parse_id_number`,
  stored as its 18-character form), ``photo`` is non-empty Base64. Registering an ID again replaces its record.
  Answers ``{"registered": true, "persons": <count>, "photo": <bool>}``; ``DELETE`` forgets every record and
  answers ``{"persons": 0}``.
- ``POST /_sandbox/next {"outcome", "count"?, "seconds"?}`` queues an override: ``outcome`` one of the
  simulator's outcomes, ``count`` a positive integer (default 1), ``seconds`` a non-negative number (absent or
  null: the simulator's ``default_seconds``); other fields are refused. ``GET`` shows the queue, ``DELETE`` clears it;
  all three answer ``{"next": [{"outcome", "count", "seconds"}, ...]}``.

A refused body answers HTTP 400 ``{"code": "PARAM_ERROR", "message": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.identity import InvalidIdentity, parse_id_number, parse_name
from minigate.simulators._core import json_response, read_json_object

__all__ = ["Authority", "Override", "Person", "SpecError", "decode_base64", "param_error", "parse_override",
           "parse_person"]

NEXT_FIELDS = frozenset({"outcome", "count", "seconds"})
NEXT_USAGE = 'JSON {"outcome": ..., "count"?: n, "seconds"?: s} expected'
PERSON_USAGE = 'JSON {"name": ..., "id_number": ..., "photo": "<base64>"?} expected'


@dataclass
class Person:
    """The authority's record for one ID number."""

    name: str
    photo: bytes | None = None


@dataclass
class Override:
    """Force ``outcome`` on the next ``count`` verdicts that accept it; ``seconds`` is for ``timeout``."""

    outcome: str
    count: int
    seconds: float | None = None


class SpecError(ValueError):
    """A control body that is refused; ``message`` is the answer's."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def param_error(message: str, status: int = 400) -> Response:
    return json_response({"code": "PARAM_ERROR", "message": message}, status)


def decode_base64(value: Any) -> bytes | None:
    """The bytes of non-empty, strictly valid Base64 text; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def parse_person(spec: Mapping[str, Any] | None) -> tuple[str, Person]:
    """(the 18-character ID number, its record) from a ``/_sandbox/persons`` body."""
    if spec is None or not isinstance(spec.get("name"), str) or not isinstance(spec.get("id_number"), str):
        raise SpecError(PERSON_USAGE)
    try:
        id_number = parse_id_number(spec["id_number"]).value
        name = parse_name(spec["name"])
    except InvalidIdentity as exc:
        raise SpecError(exc.message) from None
    photo = None
    if spec.get("photo") is not None:
        photo = decode_base64(spec["photo"])
        if photo is None:
            raise SpecError("photo must be non-empty Base64")
    return id_number, Person(name, photo)


def parse_override(spec: Mapping[str, Any] | None, outcomes: Iterable[str], *,
                   default_seconds: float | None = None) -> Override:
    """The override a ``/_sandbox/next`` body asks for; ``outcomes`` are the ones the simulator knows."""
    allowed = tuple(outcomes)
    if spec is None:
        raise SpecError(NEXT_USAGE)
    unknown = set(spec) - NEXT_FIELDS
    if unknown:
        raise SpecError(f"unknown fields: {sorted(unknown)}")
    outcome, count, seconds = spec.get("outcome"), spec.get("count", 1), spec.get("seconds")
    if seconds is None:                             # absent or null
        seconds = default_seconds
    if not isinstance(outcome, str) or outcome not in allowed:
        raise SpecError(f"outcome must be one of {', '.join(allowed)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SpecError("count must be a positive integer")
    if seconds is not None and (not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0):
        raise SpecError("seconds must be a non-negative number")
    return Override(outcome, count, None if seconds is None else float(seconds))


class Authority:
    """The registered persons (by ID number) and the override queue of one identity simulator."""

    def __init__(self, outcomes: Iterable[str], *, default_seconds: float | None = None) -> None:
        self.outcomes = tuple(outcomes)
        #: ``seconds`` of an override whose body gives none
        self.default_seconds = default_seconds
        self.persons: dict[str, Person] = {}
        self.overrides: list[Override] = []

    def take(self, accept: Callable[[str], bool] = lambda outcome: True) -> Override | None:
        """Use up one count of the head override when ``accept`` takes its outcome; None (and the queue as it
        was) otherwise. Only the head is looked at, so overrides are used in the order given."""
        if not self.overrides or not accept(self.overrides[0].outcome):
            return None
        head = self.overrides[0]
        head.count -= 1
        if head.count <= 0:
            self.overrides.pop(0)
        return head

    def routes(self, *, persons: bool = True) -> list[Route]:
        """``/_sandbox/next`` and, unless ``persons`` is false, ``/_sandbox/persons``."""
        routes = [Route("/_sandbox/next", self.next_endpoint, methods=["GET", "POST", "DELETE"])]
        if persons:
            routes.append(Route("/_sandbox/persons", self.persons_endpoint, methods=["POST", "DELETE"]))
        return routes

    async def persons_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.persons.clear()
            return json_response({"persons": 0})
        try:
            id_number, person = parse_person(await read_json_object(request))
        except SpecError as exc:
            return param_error(exc.message)
        self.persons[id_number] = person
        return json_response({"registered": True, "persons": len(self.persons), "photo": person.photo is not None})

    async def next_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                override = parse_override(await read_json_object(request), self.outcomes,
                                          default_seconds=self.default_seconds)
            except SpecError as exc:
                return param_error(exc.message)
            self.overrides.append(override)
        elif request.method == "DELETE":
            self.overrides.clear()
        return json_response({"next": [{"outcome": o.outcome, "count": o.count, "seconds": o.seconds}
                                       for o in self.overrides]})
