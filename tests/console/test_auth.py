"""Console sign-in, sessions and forms over HTTP (SQLite and PostgreSQL): passwords (Argon2id), lock-out,
TOTP, session expiry and revocation, CSRF and origin checks, roles, the audit trail of it all."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select

from minigate.console import users
from minigate.errors import ApiError, Conflict
from minigate.store.tables import AuditEntry, ConsoleSession, ConsoleUser
from tests.console.conftest import Console
from tests.console.support import PASSWORD, ConsoleClient, add_user


async def _actions(console: Console) -> list[str]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry.action).order_by(AuditEntry.seq))).scalars())


async def test_passwords_are_argon2id_and_never_stored_in_clear(console: Console) -> None:
    async with console.gw.rt.db.read() as session:
        rows = (await session.execute(select(ConsoleUser))).scalars().all()
    assert rows and all(r.password_hash.startswith("$argon2id$") for r in rows)
    assert all(PASSWORD not in r.password_hash for r in rows)


async def test_wrong_password_is_refused_without_telling_which_part(console: Console) -> None:
    client = ConsoleClient.on(console.gw.app)
    wrong = await client.sign_in("admin@shop.example", "not the right password")
    unknown = await client.sign_in("nobody@shop.example", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert 'data-code="invalid_credentials"' in wrong.text and 'data-code="invalid_credentials"' in unknown.text
    assert "mg_console" not in wrong.headers.get("set-cookie", "")
    assert (await client.get("/console/")).status_code == 303           # still signed out
    assert (await _actions(console)).count("console.login_failed") == 2
    await client.aclose()


async def test_lock_out_after_repeated_failures(console: Console) -> None:
    rt = console.gw.rt
    await add_user(rt, "target@shop.example", "operator")
    client = ConsoleClient.on(console.gw.app)
    for _ in range(rt.settings.console_login_failures):
        assert (await client.sign_in("target@shop.example", "guess guess guess")).status_code == 401
    locked = await client.sign_in("target@shop.example", PASSWORD)           # even the right password now
    assert locked.status_code == 429 and 'data-code="account_locked"' in locked.text
    assert int(locked.headers["retry-after"]) > 0
    assert "console.lockout" in await _actions(console)
    # an admin lifts it by setting a new password
    target = next(u for u in await users.list_users(rt) if u["email"] == "target@shop.example")
    await users.change_password(rt, target["id"], "a brand new password", actor="cli")
    assert (await client.sign_in("target@shop.example", "a brand new password")).status_code == 303
    await client.aclose()


async def test_totp_second_factor(console: Console) -> None:
    rt = console.gw.rt
    admin = console.admin
    page = await admin.get("/console/account")
    started = await admin.post("/console/account/totp")
    assert started.status_code == 200
    uri = started.text.split('data-testid="totp-uri">')[1].split("<")[0].replace("&amp;", "&")
    secret = pyotp.parse_uri(uri).secret
    assert page.status_code == 200
    bad = await admin.post("/console/account/totp/confirm", {"code": "000000" if pyotp.TOTP(secret).now() != "000000"
                                                            else "111111"})
    assert bad.status_code == 400 and 'data-code="invalid_totp"' in bad.text
    ok = await admin.post("/console/account/totp/confirm", {"code": pyotp.TOTP(secret).now()})
    assert ok.status_code == 303
    async with rt.db.read() as session:
        row = (await session.execute(select(ConsoleUser).where(ConsoleUser.email == "admin@shop.example"))).scalar_one()
    assert row.totp_sealed and secret not in row.totp_sealed                 # sealed by the vault

    fresh = ConsoleClient.on(console.gw.app)
    first = await fresh.sign_in("admin@shop.example")
    assert first.status_code == 303 and first.headers["location"].startswith("/console/login/totp")
    assert (await fresh.get("/console/")).status_code == 303                # half signed in: no pages yet
    wrong = await fresh.http.post("/console/login/totp", data={"code": "12345", "next": "/console/"})
    assert wrong.status_code == 401
    # the code confirmed at enrolment is used: the next step's code is the next one valid
    step = int(rt.now().timestamp()) // 30
    code = pyotp.TOTP(secret).generate_otp(step + 1)
    good = await fresh.http.post("/console/login/totp", data={"code": code, "next": "/console/"})
    assert good.status_code == 303 and good.headers["location"] == "/console/"
    assert (await fresh.get("/console/")).status_code == 200
    replay = ConsoleClient.on(console.gw.app)
    await replay.sign_in("admin@shop.example")
    again = await replay.http.post("/console/login/totp", data={"code": code, "next": "/console/"})
    assert again.status_code == 401                                          # a code is good once
    for client in (fresh, replay):
        await client.aclose()


async def test_csrf_and_origin_checks_refuse_and_change_nothing(console: Console) -> None:
    admin = console.admin
    await admin.get("/console/")
    no_token = await admin.post("/console/session", {"lang": "zh", "back": "/console/"}, csrf="")
    wrong = await admin.post("/console/session", {"lang": "zh", "back": "/console/"}, csrf="x" * 43)
    cross_site = await admin.http.post("/console/session", data={"lang": "zh", "csrf_token": admin.csrf},
                                       headers={"Origin": "https://evil.example"})
    null_origin = await admin.http.post("/console/session", data={"lang": "zh", "csrf_token": admin.csrf},
                                        headers={"Origin": "null"})
    for r in (no_token, wrong, cross_site, null_origin):
        assert r.status_code == 403 and 'data-code="csrf_failed"' in r.text
    assert 'lang="zh-CN"' not in (await admin.get("/console/")).text            # the language did not change
    ok = await admin.http.post("/console/session", data={"lang": "zh", "csrf_token": admin.csrf},
                               headers={"Origin": "http://gateway"})
    assert ok.status_code == 303
    assert 'lang="zh-CN"' in (await admin.get("/console/")).text


async def test_sessions_expire_and_end(console: Console) -> None:
    rt = console.gw.rt
    viewer = console.viewer
    assert (await viewer.get("/console/")).status_code == 200
    async with rt.db.transaction() as session:                      # idle for longer than allowed
        for row in (await session.execute(select(ConsoleSession))).scalars():
            row.expires_at = rt.now() - timedelta(seconds=1)
    assert (await viewer.get("/console/")).status_code == 303
    client = ConsoleClient.on(console.gw.app)
    await client.sign_in("operator@shop.example")
    assert (await client.get("/console/")).status_code == 200
    out = await client.post("/console/logout")
    assert out.status_code == 303 and (await client.get("/console/")).status_code == 303
    # the old cookie is dead on the server too, not only deleted in the browser
    assert "console.logout" in await _actions(console)
    await client.aclose()


async def test_role_change_and_disabling_end_sessions(console: Console) -> None:
    rt = console.gw.rt
    operator = next(u for u in await users.list_users(rt) if u["email"] == "operator@shop.example")
    assert (await console.operator.get("/console/")).status_code == 200
    await users.set_role(rt, operator["id"], "viewer", actor="cli")
    assert (await console.operator.get("/console/")).status_code == 303
    await users.set_disabled(rt, operator["id"], True, actor="cli")
    client = ConsoleClient.on(console.gw.app)
    assert (await client.sign_in("operator@shop.example")).status_code == 401
    await client.aclose()


async def test_last_admin_is_kept(console: Console) -> None:
    rt = console.gw.rt
    admin = next(u for u in await users.list_users(rt) if u["email"] == "admin@shop.example")
    with pytest.raises(Conflict) as demoted:
        await users.set_role(rt, admin["id"], "viewer", actor="cli")
    with pytest.raises(Conflict) as disabled:
        await users.set_disabled(rt, admin["id"], True, actor="cli")
    assert demoted.value.code == disabled.value.code == "last_admin"
    assert (await console.admin.get("/console/")).status_code == 200


async def test_open_redirects_and_cookie_flags(console: Console) -> None:
    client = ConsoleClient.on(console.gw.app)
    r = await client.http.post("/console/login", data={"email": "viewer@shop.example", "password": PASSWORD,
                                                       "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    page = await client.get("/console/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    await client.aclose()


async def test_short_passwords_and_duplicate_users_are_refused(console: Console) -> None:
    rt = console.gw.rt
    for kwargs, code in (({"email": "x@shop.example", "password": "short"}, "password_too_short"),
                         ({"email": "not-an-email", "password": PASSWORD}, "parameter_invalid"),
                         ({"email": "viewer@shop.example", "password": PASSWORD}, "user_exists")):
        with pytest.raises(ApiError) as refused:
            await users.create_user(rt, name="X", role="viewer", **kwargs)
        assert refused.value.code == code
