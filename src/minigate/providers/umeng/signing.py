"""The Umeng+ OpenAPI request signature: the Alibaba open-platform ("AOP") gateway scheme, service-protocols.md §3.1.

Every call goes to ``<gateway>/openapi/param2/1/<namespace>/<apiName>/<apiKey>`` and carries
``_aop_signature``::

    urlPath        = "param2/1/" + namespace + "/" + apiName + "/" + apiKey        (the path after "/openapi/")
    string to sign = urlPath + "".join(sorted(name + value for every other parameter))
    _aop_signature = UPPER(hex(HMAC-SHA1(apiSecurity, string to sign)))

Values are signed raw (not URL-encoded), UTF-8. The sort is over the concatenated ``name + value`` strings, as the
official SDK's ``SignatureUtil`` does (``sort($paramsToSign)``); clients that sort by name give the same string
unless one parameter name is a prefix of another (``indicator`` / ``indicators`` never travel together in the
umini APIs). ``_aop_timestamp`` (epoch milliseconds) is optional; when sent it is signed like any parameter.

Pure functions, shared by the client (:mod:`minigate.providers.umeng.provider`) and the simulator
(:mod:`minigate.simulators.umeng`). The cross-check value of service-protocols.md §5 is a unit test.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["PROTOCOL", "SIGNATURE_PARAM", "TIMESTAMP_PARAM", "VERSION", "sign", "string_to_sign", "url_path",
           "verify"]

PROTOCOL = "param2"
VERSION = "1"
SIGNATURE_PARAM = "_aop_signature"
TIMESTAMP_PARAM = "_aop_timestamp"


def url_path(namespace: str, api_name: str, api_key: str, *, protocol: str = PROTOCOL, version: str = VERSION) -> str:
    """``param2/1/<namespace>/<apiName>/<apiKey>``: what is signed (no leading ``/``, no ``openapi/``)."""
    return f"{protocol}/{version}/{namespace}/{api_name}/{api_key}"


def string_to_sign(path: str, params: Mapping[str, str]) -> str:
    """``path`` followed by every ``name + value`` but the signature's own, sorted as strings."""
    return path + "".join(sorted(name + value for name, value in params.items() if name != SIGNATURE_PARAM))


def sign(path: str, params: Mapping[str, str], api_security: str) -> str:
    """Upper-case hex HMAC-SHA1 of :func:`string_to_sign` keyed with ``apiSecurity``."""
    message = string_to_sign(path, params).encode("utf-8")
    return hmac.new(api_security.encode("utf-8"), message, hashlib.sha1).hexdigest().upper()


def verify(signature: str, path: str, params: Mapping[str, str], api_security: str) -> bool:
    """Constant-time comparison with the expected signature (hex letter case is not significant)."""
    expected = sign(path, params, api_security)
    return hmac.compare_digest(expected.encode("ascii"), signature.upper().encode("utf-8", "replace"))
