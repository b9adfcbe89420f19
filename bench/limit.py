"""The irreducible cost of one mini-program order, measured in-process on this machine.

Per order: two RSA-2048 PKCS#1 v1.5 / SHA-256 signatures (the request's Authorization and ``paySign``), one
verification (the provider's signed answer), one durable commit of a one-row transaction (SQLite WAL +
synchronous=FULL with the stdlib driver; PostgreSQL fsync=on / synchronous_commit=on, one client, psycopg2).
Measured single-threaded, one after the other, as CPU time of this process (``time.process_time``) and wall
time. The durable commit's wall time is mostly the fsync; its CPU time is what a gateway process pays.

Per verification code (scenario d): one durable commit and one ACS3-HMAC-SHA256 signature of a ``SendSms``
request (canonical request over the query and the signed headers, SHA-256, HMAC-SHA256 — the signer minigate
uses, :func:`minigate.providers.aliyun_sms.signing.acs3_authorization`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _time(fn: Any, n: int) -> tuple[float, float]:
    """(CPU ms per call, wall ms per call)."""
    fn()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) * 1000 / n, (time.perf_counter() - w0) * 1000 / n


def crypto(n: int) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    message = json.dumps({"appid": "wx" + "0" * 16, "mchid": "1900000000", "description": "Latte",
                          "out_trade_no": "MG" + "A" * 24, "notify_url": "http://127.0.0.1:8000/notify/x",
                          "amount": {"total": 100, "currency": "CNY"}, "payer": {"openid": "o" * 28}}).encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    sign_cpu, sign_wall = _time(lambda: key.sign(message, padding.PKCS1v15(), hashes.SHA256()), n)
    verify_cpu, verify_wall = _time(
        lambda: public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256()), n * 5)
    return {"rsa2048_sign": {"cpu_ms": round(sign_cpu, 4), "wall_ms": round(sign_wall, 4),
                             "per_s": round(1000 / sign_wall)},
            "rsa2048_verify": {"cpu_ms": round(verify_cpu, 4), "wall_ms": round(verify_wall, 4),
                               "per_s": round(1000 / verify_wall)}}


def acs3(n: int) -> dict[str, Any]:
    """One ACS3-HMAC-SHA256 ``Authorization`` for a ``SendSms`` request as the SDK and minigate send it."""
    from minigate.providers.aliyun_sms import signing

    query = {"PhoneNumbers": "13800138000", "SignName": "迷你网关", "TemplateCode": "SMS_341288911",
             "TemplateParam": json.dumps({"code": "864209", "minutes": "5"}), "OutId": "msg_" + "a" * 24}
    headers = {"host": "dysmsapi.aliyuncs.com", "x-acs-action": "SendSms", "x-acs-version": "2017-05-25",
               "x-acs-date": "2026-01-01T00:00:00Z", "x-acs-signature-nonce": "0123456789abcdef0123456789abcdef",
               "x-acs-content-sha256": signing.EMPTY_SHA256}

    def sign() -> None:
        signing.acs3_authorization(method="POST", query=query, headers=headers, access_key_id="LTAI5t" + "x" * 18,
                                   access_key_secret="y" * 30, payload_hash=signing.EMPTY_SHA256)

    cpu, wall = _time(sign, n)
    return {"cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4), "per_s": round(1000 / wall)}


_ROW = ("MG" + "A" * 24, "ord_" + "b" * 24, 100, "pending", "prepay_id=wx" + "1" * 30, "2026-01-01T00:00:00+00:00")


def sqlite_commit(path: Path, n: int) -> dict[str, Any]:
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, out_trade_no TEXT UNIQUE, ref TEXT, amount INT,"
                 " status TEXT, prepay TEXT, created TEXT)")
    counter = iter(range(10 ** 9))

    def commit() -> None:
        i = next(counter)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO orders (out_trade_no, ref, amount, status, prepay, created) VALUES (?,?,?,?,?,?)",
                     (f"{_ROW[0]}{i}", *_ROW[1:]))
        conn.execute("COMMIT")

    cpu, wall = _time(commit, n)
    conn.close()
    return {"cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4), "per_s": round(1000 / wall),
            "settings": "WAL, synchronous=FULL, BEGIN IMMEDIATE, 1 row per transaction"}


def postgres_commit(url: str, n: int) -> dict[str, Any]:
    import psycopg2

    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SHOW synchronous_commit")
        sync = cur.fetchone()[0]
        cur.execute("SHOW fsync")
        fsync = cur.fetchone()[0]
        cur.execute("CREATE TABLE IF NOT EXISTS limit_orders (id BIGSERIAL PRIMARY KEY, out_trade_no TEXT UNIQUE,"
                    " ref TEXT, amount INT, status TEXT, prepay TEXT, created TIMESTAMPTZ)")
    conn.commit()
    counter = iter(range(10 ** 9))

    def commit() -> None:
        i = next(counter)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO limit_orders (out_trade_no, ref, amount, status, prepay, created)"
                        " VALUES (%s,%s,%s,%s,%s,%s)", (f"{_ROW[0]}{os.getpid()}-{i}", *_ROW[1:]))
        conn.commit()

    cpu, wall = _time(commit, n)
    conn.close()
    return {"cpu_ms": round(cpu, 4), "wall_ms": round(wall, 4), "per_s": round(1000 / wall),
            "settings": f"fsync={fsync}, synchronous_commit={sync}, 1 client, 1 row per transaction"}


def measure(run_dir: Path, pg_url: str | None, *, full: bool) -> dict[str, Any]:
    n = 2000 if full else 400
    out: dict[str, Any] = crypto(n)
    out["commit"] = {"sqlite": sqlite_commit(run_dir / "limit.db", n * 2)}
    if pg_url:
        out["commit"]["postgres"] = postgres_commit(pg_url, n * 2)
    out["acs3_sign"] = acs3(n * 10)
    sign, verify = out["rsa2048_sign"], out["rsa2048_verify"]
    out["per_order"] = {}
    out["per_code"] = {db: {"cpu_ms": round(c["cpu_ms"] + out["acs3_sign"]["cpu_ms"], 4),
                            "wall_ms": round(c["wall_ms"] + out["acs3_sign"]["wall_ms"], 4)}
                       for db, c in out["commit"].items()}
    for db, c in out["commit"].items():
        out["per_order"][db] = {
            "cpu_ms": round(2 * sign["cpu_ms"] + verify["cpu_ms"] + c["cpu_ms"], 4),
            "wall_ms": round(2 * sign["wall_ms"] + verify["wall_ms"] + c["wall_ms"], 4),
        }
    return out
