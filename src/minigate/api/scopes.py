"""The scope each ``/v1`` route requires of the API key that calls it.

A scope is ``<resource>:<read|write>`` (``write`` implies ``read``) or ``*`` (everything: every key made before
scopes existed, and each app's first keys). The table is keyed by the route as FastAPI matched it — the method
and the path *template* (``/v1/orders/{order_id}``), never the concrete URL — so a route cannot be reached under
another spelling. A route missing from the table requires ``*``: a new route is closed to restricted keys until
it is classified here (``tests/api/test_api_keys.py`` fails while one is missing).

``/v1/analytics/collect`` is not here: it takes publishable keys (``mg_pk_…``), never a secret key.
"""

from __future__ import annotations

from minigate.services.apps import RESOURCES

__all__ = ["ROUTE_SCOPES", "UNCLASSIFIED", "required_scope"]

#: what a route not in :data:`ROUTE_SCOPES` requires
UNCLASSIFIED = "*"


def _r(resource: str) -> str:
    return f"{resource}:read"


def _w(resource: str) -> str:
    return f"{resource}:write"


ROUTE_SCOPES: dict[tuple[str, str], str] = {
    # orders: orders, refunds, payment exceptions, reconciliation
    ("POST", "/v1/orders"): _w("orders"),
    ("GET", "/v1/orders"): _r("orders"),
    ("GET", "/v1/orders/{order_id}"): _r("orders"),
    ("POST", "/v1/orders/{order_id}/close"): _w("orders"),
    ("POST", "/v1/refunds"): _w("orders"),
    ("GET", "/v1/refunds"): _r("orders"),
    ("GET", "/v1/refunds/{refund_id}"): _r("orders"),
    ("GET", "/v1/payment_exceptions"): _r("orders"),
    ("GET", "/v1/payment_exceptions/{exception_id}"): _r("orders"),
    ("POST", "/v1/payment_exceptions/{exception_id}/resolve"): _w("orders"),
    ("GET", "/v1/reconciliation_runs"): _r("orders"),
    ("GET", "/v1/reconciliation_runs/{run_id}"): _r("orders"),
    # webhooks: endpoints, deliveries, events
    ("GET", "/v1/events"): _r("webhooks"),
    ("GET", "/v1/events/{event_id}"): _r("webhooks"),
    ("POST", "/v1/events/{event_id}/redeliver"): _w("webhooks"),
    ("POST", "/v1/webhook_endpoints"): _w("webhooks"),
    ("GET", "/v1/webhook_endpoints"): _r("webhooks"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}"): _r("webhooks"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"): _w("webhooks"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"): _w("webhooks"),
    ("GET", "/v1/webhook_deliveries"): _r("webhooks"),
    # sms: messages, verification codes, consents, SMS settings
    ("POST", "/v1/sms/messages"): _w("sms"),
    ("GET", "/v1/sms/messages"): _r("sms"),
    ("GET", "/v1/sms/messages/{message_id}"): _r("sms"),
    ("POST", "/v1/verification_codes"): _w("sms"),
    ("POST", "/v1/verification_codes/check"): _w("sms"),
    ("GET", "/v1/sms/settings"): _r("sms"),
    ("PUT", "/v1/sms/settings"): _w("sms"),
    ("POST", "/v1/consents"): _w("sms"),
    ("GET", "/v1/consents"): _r("sms"),
    # identity (a subject export hands out personal data: write, like the erasure)
    ("POST", "/v1/identity/verifications"): _w("identity"),
    ("GET", "/v1/identity/verifications"): _r("identity"),
    ("GET", "/v1/identity/verifications/{verification_id}"): _r("identity"),
    ("POST", "/v1/identity/verifications/{verification_id}/refresh"): _w("identity"),
    ("GET", "/v1/identity/settings"): _r("identity"),
    ("PUT", "/v1/identity/settings"): _w("identity"),
    ("POST", "/v1/identity/subjects/export"): _w("identity"),
    ("POST", "/v1/identity/subjects/erase"): _w("identity"),
    # analytics (reports, pulls, forwarding, settings, publishable keys, persons)
    ("GET", "/v1/analytics/active_users"): _r("analytics"),
    ("GET", "/v1/analytics/retention"): _r("analytics"),
    ("GET", "/v1/analytics/funnel"): _r("analytics"),
    ("GET", "/v1/analytics/payment_funnel"): _r("analytics"),
    ("GET", "/v1/analytics/top_events"): _r("analytics"),
    ("GET", "/v1/analytics/top_pages"): _r("analytics"),
    ("GET", "/v1/analytics/external_metrics"): _r("analytics"),
    ("POST", "/v1/analytics/pulls"): _w("analytics"),
    ("GET", "/v1/analytics/pulls"): _r("analytics"),
    ("GET", "/v1/analytics/forwarding"): _r("analytics"),
    ("GET", "/v1/analytics/settings"): _r("analytics"),
    ("PUT", "/v1/analytics/settings"): _w("analytics"),
    ("POST", "/v1/analytics/publishable_keys"): _w("analytics"),
    ("GET", "/v1/analytics/publishable_keys"): _r("analytics"),
    ("DELETE", "/v1/analytics/publishable_keys/{key_id}"): _w("analytics"),
    ("GET", "/v1/analytics/persons/{person}/events"): _r("analytics"),
    ("DELETE", "/v1/analytics/persons/{person}"): _w("analytics"),
    # privacy: one subject request across capabilities (the route also checks every capability's scope)
    ("POST", "/v1/privacy/subjects/export"): _w("identity"),
    ("POST", "/v1/privacy/subjects/erase"): _w("identity"),
    # audit
    ("GET", "/v1/audit_events"): _r("audit"),
    # keys
    ("POST", "/v1/api_keys"): _w("keys"),
    ("GET", "/v1/api_keys"): _r("keys"),
    ("POST", "/v1/api_keys/{key_id}/roll"): _w("keys"),
    ("DELETE", "/v1/api_keys/{key_id}"): _w("keys"),
    # login: exchanging a mini-program login code for the user's identity
    ("POST", "/v1/wechat/login"): _w("login"),
    ("POST", "/v1/alipay/login"): _w("login"),
}

assert {scope.partition(":")[0] for scope in ROUTE_SCOPES.values()} <= set(RESOURCES)


def required_scope(method: str, path_template: str) -> str:
    """The scope a route requires; :data:`UNCLASSIFIED` (``*``) when the table does not name it."""
    return ROUTE_SCOPES.get((method.upper(), path_template), UNCLASSIFIED)
