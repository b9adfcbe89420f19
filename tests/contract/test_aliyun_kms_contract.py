"""The KMS contract: minigate's Alibaba Cloud KMS client against the ``aliyun-kms`` simulator, mounted in the
sandbox as the gateway uses it. A round trip; a ciphertext that names its key (``Decrypt`` takes no key id, so a
rotation can read the previous key's ciphertext); and every refusal the gateway must make — bad signature, old
time stamp, reused nonce, unknown AccessKey, unknown key, another encryption context, a tampered ciphertext —
answered in Alibaba's error shape and turned into a :class:`KmsError` that carries no secret."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr

from minigate.kms import KmsError
from minigate.kms.aliyun import AliyunKmsWrapper
from minigate.providers.aliyun_sms import signing
from minigate.simulators.sandbox import REGISTRY, Sandbox, credentials_for


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path / "sandbox")
    yield box
    await box.aclose()


def _client(box: Sandbox, **overrides: Any) -> AliyunKmsWrapper:
    creds = box.credentials("aliyun-kms")
    kwargs: dict[str, Any] = {
        "key_id": creds["key_ids"][0], "access_key_id": creds["access_key_id"],
        "access_key_secret": SecretStr(creds["access_key_secret"]), "endpoint": "http://sandbox/aliyun-kms",
        "client": httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app))} | overrides
    return AliyunKmsWrapper(**kwargs)


async def _raw(box: Sandbox, client: AliyunKmsWrapper, action: str, params: dict[str, str]) -> httpx.Response:
    """The answer itself, as Alibaba shapes it."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app)) as http:
        return await http.send(client.build_request(action, params))


def test_registered_in_the_sandbox_with_credentials_but_never_key_material(tmp_path: Path) -> None:
    assert REGISTRY["aliyun-kms"] == "minigate.simulators.aliyun_kms:AliyunKmsSimulator"
    creds = credentials_for(tmp_path / "state", "aliyun-kms")
    assert set(creds) == {"access_key_id", "access_key_secret", "region_id", "key_ids"}
    assert len(creds["key_ids"]) == 2
    stored = json.loads((tmp_path / "state" / "aliyun-kms.json").read_text())
    assert (tmp_path / "state" / "aliyun-kms.json").stat().st_mode & 0o077 == 0
    assert all(material not in json.dumps(creds) for material in stored["keys"].values())


async def test_round_trip_and_keys_that_survive_a_restart(sandbox: Sandbox, tmp_path: Path) -> None:
    raw = os.urandom(32)
    first, second = _client(sandbox), _client(sandbox, key_id=sandbox.credentials("aliyun-kms")["key_ids"][1])
    wrapped = await first.wrap("root-1", raw)
    assert raw.hex() not in wrapped and base64.b64encode(raw).decode() not in wrapped
    assert await first.unwrap("root-1", wrapped) == raw
    # Decrypt takes no KeyId: a client configured with the second key reads the first key's ciphertext
    assert await second.unwrap("root-1", wrapped) == raw
    assert await second.unwrap("root-1", await second.wrap("root-1", raw)) == raw
    # the keys live in the state dir: another sandbox over it decrypts the same ciphertext
    again = Sandbox(tmp_path / "sandbox")
    assert await _client(again).unwrap("root-1", wrapped) == raw
    for client in (first, second):
        await client.aclose()


async def test_refusals(sandbox: Sandbox) -> None:
    sim = sandbox.simulator("aliyun-kms")
    good = _client(sandbox)
    wrapped = await good.wrap("root-1", b"r" * 32)
    plaintext = base64.b64encode(b"r" * 32).decode()
    encrypt = {"KeyId": good.key_ref, "Plaintext": plaintext, "EncryptionContext": '{"row":"root-1"}'}
    cases: list[tuple[str, AliyunKmsWrapper, str, dict[str, str], int, str]] = [
        ("bad signature", _client(sandbox, access_key_secret=SecretStr("x" * 30)), "Encrypt", encrypt, 400,
         "SignatureDoesNotMatch"),
        ("old time stamp", _client(sandbox, clock=lambda: sim.now() - 16 * 60), "Encrypt", encrypt, 400,
         "IllegalTimestamp"),
        ("unknown AccessKey", _client(sandbox, access_key_id="LTAI5tUnknownUnknown00"), "Encrypt", encrypt, 404,
         "InvalidAccessKeyId.NotFound"),
        ("unknown key", good, "Encrypt", encrypt | {"KeyId": "00000000-0000-4000-8000-000000000000"}, 404,
         "Forbidden.KeyNotFound"),
        ("Plaintext not base64", good, "Encrypt", encrypt | {"Plaintext": "not base64!"}, 400, "InvalidParameter"),
        ("missing KeyId", good, "Encrypt", {"Plaintext": plaintext}, 400, "MissingParameter"),
        ("unknown action", good, "ScheduleKeyDeletion", {"KeyId": good.key_ref}, 404, "InvalidAction.NotFound"),
    ]
    for what, client, action, params, status, code in cases:
        answer = await _raw(sandbox, client, action, params)
        body = answer.json()
        assert (answer.status_code, body["Code"]) == (status, code), what
        assert body["RequestId"] and body["Message"] and body["HttpStatus"] == status, what
    # the client turns a refusal into a KmsError with the code and request id, never Alibaba's message, which
    # for SignatureDoesNotMatch quotes the signed string — the plaintext included
    refused = await _raw(sandbox, cases[0][1], "Encrypt", encrypt)
    assert signing.percent_encode(signing.percent_encode(plaintext)) in refused.json()["Message"]
    with pytest.raises(KmsError, match="SignatureDoesNotMatch") as caught:
        await cases[0][1].wrap("root-1", b"r" * 32)
    message = str(caught.value)
    assert "RequestId" in message and "string to sign" not in message
    assert plaintext not in message and signing.percent_encode(plaintext) not in message

    # a reused nonce
    replaying = _client(sandbox, nonce=lambda: "the-same-nonce-every-time")
    await replaying.unwrap("root-1", wrapped)
    with pytest.raises(KmsError, match="SignatureNonceUsed"):
        await replaying.unwrap("root-1", wrapped)
    # another encryption context (the ciphertext was stored under another row), and a tampered ciphertext
    with pytest.raises(KmsError, match="InvalidParameter"):
        await good.unwrap("root-2", wrapped)
    blob = bytearray(base64.b64decode(wrapped))
    blob[-1] ^= 1
    with pytest.raises(KmsError, match="InvalidParameter"):
        await good.unwrap("root-1", base64.b64encode(bytes(blob)).decode())
    # a ciphertext naming a key the account does not have
    foreign = b"11111111-1111-4111-8111-111111111111" + bytes(blob[36:])
    with pytest.raises(KmsError, match="Forbidden.KeyNotFound"):
        await good.unwrap("root-1", base64.b64encode(foreign).decode())
    # the gateway faults of every simulator: an outage is a KmsError too
    await _raw_fault(sandbox, {"next_call": "http_500", "path": "Decrypt"})
    with pytest.raises(KmsError, match="InternalFailure"):
        await good.unwrap("root-1", wrapped)
    assert await good.unwrap("root-1", wrapped) == b"r" * 32


async def _raw_fault(box: Sandbox, spec: dict[str, Any]) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=box.app), base_url="http://sandbox") as http:
        assert (await http.post("/aliyun-kms/_sandbox/faults", json=spec)).status_code == 200


async def test_signed_form_is_what_the_simulator_verifies(sandbox: Sandbox) -> None:
    """The simulator checks the signature over the form exactly as sent: one changed value is refused."""
    client = _client(sandbox)
    request = client.build_request("Encrypt", {"KeyId": client.key_ref,
                                               "Plaintext": base64.b64encode(b"a").decode()})
    form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
    form["Plaintext"] = base64.b64encode(b"b").decode()
    tampered = httpx.Request("POST", request.url, headers=request.headers,
                             content=signing.canonical_query(form).encode())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox.app)) as http:
        answer = await http.send(tampered)
    assert answer.status_code == 400 and answer.json()["Code"] == "SignatureDoesNotMatch"
