"""Settings pages over HTTP (SQLite and PostgreSQL): keys shown once then only as hints, revocation reaching the
API, credentials stored with fingerprints only, webhook endpoints, SMS templates, console users, and every action
refused to operators and viewers, audited when done."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select

from minigate.store.tables import ApiKey, AppCredential, AuditEntry, ConsoleUser, WebhookEndpoint
from tests.console.conftest import Console
from tests.console.support import ConsoleClient

_SECRET = re.compile(r'data-testid="secret">([^<]+)<')
PAGES = ["/console/settings", "/console/settings/keys", "/console/settings/credentials",
         "/console/settings/credentials?provider=wechatpay", "/console/settings/sms", "/console/settings/webhooks",
         "/console/settings/publishable", "/console/settings/users"]


def shown_secret(html: str) -> str:
    found = _SECRET.search(html)
    assert found, html[:2000]
    return found.group(1)


async def audited(console: Console, action: str) -> list[AuditEntry]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


def admin_actor(console: Console) -> str:
    return f"console:{console.users['admin']['id']}"


async def test_every_settings_page_renders_in_both_languages(console: Console) -> None:
    for lang in ("en", "zh"):
        await console.admin.get("/console/settings")
        assert (await console.admin.post("/console/session", {"lang": lang, "back": "/console/settings"})
                ).status_code == 303
        for path in PAGES:
            r = await console.admin.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert 'data-testid="settings-tabs"' in r.text
        assert ("API 密钥" in r.text) == (lang == "zh")


async def test_operator_and_viewer_are_refused_settings(console: Console) -> None:
    for client in (console.operator, console.viewer):
        for path in PAGES:
            r = await client.get(path)
            assert r.status_code == 403, path
            assert 'data-code="role_required"' in r.text
        await client.get("/console/")
        r = await client.post("/console/settings/keys", {"name": "sneaky", "scopes": "*"})
        assert r.status_code == 403 and 'data-code="role_required"' in r.text
        r = await client.post("/console/settings/users", {"email": "x@shop.example", "role": "admin",
                                                          "password": "a long enough password"})
        assert r.status_code == 403
    assert await console.gw.count(ApiKey) == 2           # the app's two first keys, nothing more
    assert await console.gw.count(ConsoleUser) == 3


async def test_api_key_shown_once_then_hint_then_revoked(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/keys")
    r = await admin.post("/console/settings/keys", {"name": "orders reader", "scopes": ["orders:read"],
                                                     "expires_in_days": "30"})
    assert r.status_code == 200, r.text[:500]
    key = shown_secret(r.text)
    assert key.startswith("mg_test_")
    assert (await gw.http.get("/v1/orders", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    # a scope it was not given
    assert (await gw.http.get("/v1/webhook_endpoints", headers={"Authorization": f"Bearer {key}"})
            ).status_code == 403

    listing = await admin.get("/console/settings/keys")
    assert key not in listing.text
    assert f"{key[:8]}…{key[-4:]}" in listing.text
    async with gw.rt.db.read() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.name == "orders reader"))).scalar_one()
    assert row.scopes == ["orders:read"] and row.expires_at is not None

    r = await admin.post(f"/console/settings/keys/{row.id}/revoke")
    assert r.status_code == 303
    assert "notice=done" in r.headers["location"]
    assert (await gw.http.get("/v1/orders", headers={"Authorization": f"Bearer {key}"})).status_code == 401
    assert "badge bad" in (await admin.get("/console/settings/keys")).text
    [created] = await audited(console, "api_key.created")
    [revoked] = await audited(console, "api_key.revoked")
    assert created.actor == revoked.actor == admin_actor(console)
    assert revoked.target == row.id


async def test_roll_gives_a_new_key_and_keeps_the_old_one_for_the_overlap(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/keys")
    old = shown_secret((await admin.post("/console/settings/keys", {"name": "pos", "scopes": "*"})).text)
    async with gw.rt.db.read() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.name == "pos"))).scalar_one()
    await admin.get("/console/settings/keys")
    r = await admin.post(f"/console/settings/keys/{row.id}/roll", {"overlap": "3600"})
    assert r.status_code == 200
    new = shown_secret(r.text)
    assert new != old
    for key in (old, new):
        assert (await gw.http.get("/v1/orders", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    await admin.get("/console/settings/keys")
    r = await admin.post(f"/console/settings/keys/{row.id}/roll", {"overlap": "12345"})
    assert r.status_code == 400 and 'data-code="parameter_invalid"' in r.text
    assert len(await audited(console, "api_key.rolled")) == 1


async def test_create_app_shows_its_keys_once(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings")
    r = await admin.post("/console/settings/apps", {"name": "Night Market"})
    assert r.status_code == 200
    test_key, live_key = re.findall(r'data-testid="secret">([^<]+)<', r.text)
    assert test_key.startswith("mg_test_") and live_key.startswith("mg_live_")
    assert (await gw.http.get("/v1/orders", headers={"Authorization": f"Bearer {test_key}"})).status_code == 200
    listing = (await admin.get("/console/settings")).text
    assert "Night Market" in listing and test_key not in listing and live_key not in listing
    [entry] = [e for e in await audited(console, "app.created") if e.target != gw.app_id]
    assert entry.actor == admin_actor(console)
    await admin.get("/console/settings")
    r = await admin.post("/console/settings/apps", {"name": ""})
    assert r.status_code == 400 and 'data-code="parameter_missing"' in r.text


def _secret_parts(config: dict[str, Any]) -> list[str]:
    """Distinctive pieces of every secret in a WeChat Pay config (the PEM bodies, the APIv3 key)."""
    key_lines = [line for line in config["merchant_private_key"].splitlines() if "-----" not in line and line]
    return [config["apiv3_key"], *key_lines[1:4]]


async def test_credentials_upload_shows_fingerprints_never_secrets(console: Console) -> None:
    from minigate.cli.keys import describe_credentials

    gw, admin = console.gw, console.admin
    config = gw.rt.sandbox_config("wechatpay")
    form_page = await admin.get("/console/settings/credentials", provider="wechatpay")
    assert 'name="f_merchant_private_key"' in form_page.text and 'name="f_apiv3_key"' in form_page.text
    # as a browser sends text areas: CRLF line ends
    fields = {f"f_{k}": (v if isinstance(v, str) else "\n".join(v)).replace("\n", "\r\n") for k, v in config.items()}
    r = await admin.post("/console/settings/credentials", {"provider": "wechatpay", **fields})
    assert r.status_code == 303, r.text[:800]
    page = (await admin.follow(r)).text
    async with gw.rt.db.read() as session:
        row = (await session.execute(select(AppCredential).where(AppCredential.provider == "wechatpay"))).scalar_one()
    stored = json.loads(gw.rt.vault.open(row.sealed_config, context="credentials:wechatpay"))
    assert stored["apiv3_key"] == config["apiv3_key"]
    assert stored["merchant_private_key"] == config["merchant_private_key"]
    assert stored["platform_certificates"] == config["platform_certificates"]
    fingerprint = describe_credentials("wechatpay", stored, gw.rt.now())["fingerprint"]
    assert f'data-testid="fingerprint">{fingerprint}<' in page
    assert 'data-provider="wechatpay"' in page
    again = (await admin.get("/console/settings/credentials", provider="wechatpay")).text
    for part in _secret_parts(config):
        assert part not in page and part not in again

    # a blank field keeps the stored value: changing one setting needs no secret
    r = await admin.post("/console/settings/credentials", {"provider": "wechatpay",
                                                           "f_request_timeout_seconds": "5"})
    assert r.status_code == 303
    async with gw.rt.db.read() as session:
        row = (await session.execute(select(AppCredential).where(AppCredential.provider == "wechatpay"))).scalar_one()
    kept = json.loads(gw.rt.vault.open(row.sealed_config, context="credentials:wechatpay"))
    assert kept["request_timeout_seconds"] == 5 and kept["apiv3_key"] == config["apiv3_key"]
    entries = await audited(console, "credentials.set")
    assert len(entries) == 2 and {e.actor for e in entries} == {admin_actor(console)}


async def test_invalid_credentials_change_nothing(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/credentials", provider="wechatpay")
    r = await admin.post("/console/settings/credentials", {"provider": "wechatpay", "f_mchid": "1900000109"})
    assert r.status_code == 400 and 'data-code="invalid_request"' in r.text
    r = await admin.post("/console/settings/credentials", {"provider": "nosuchpay", "f_x": "1"})
    assert r.status_code == 400 and 'data-code="parameter_invalid"' in r.text
    r = await admin.post("/console/settings/credentials", {"provider": "wechatpay", "json": "[1, 2]"})
    assert r.status_code == 400
    assert await gw.count(AppCredential) == 0
    assert await audited(console, "credentials.set") == []


async def test_webhook_endpoint_secret_once_rotate_and_disable(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/webhooks")
    r = await admin.post("/console/settings/webhooks", {"url": "http://merchant.example/hooks",
                                                         "events": "order.paid, refund.succeeded"})
    assert r.status_code == 200, r.text[:500]
    secret = shown_secret(r.text)
    assert secret.startswith("whsec_")
    async with gw.rt.db.read() as session:
        endpoint = (await session.execute(select(WebhookEndpoint))).scalar_one()
    assert endpoint.enabled_events == ["order.paid", "refund.succeeded"]
    listing = (await admin.get("/console/settings/webhooks")).text
    assert secret not in listing and endpoint.id in listing

    r = await admin.post(f"/console/settings/webhooks/{endpoint.id}/rotate", {"overlap": "0"})
    rotated = shown_secret(r.text)
    assert rotated != secret
    await admin.get("/console/settings/webhooks")
    assert (await admin.post(f"/console/settings/webhooks/{endpoint.id}/disable")).status_code == 303
    endpoint_api = await gw.http.get(f"/v1/webhook_endpoints/{endpoint.id}", headers=gw.auth)
    assert endpoint_api.json()["status"] == "disabled"
    for action in ("webhook_endpoint.created", "webhook_endpoint.secret_rotated", "webhook_endpoint.disabled"):
        [entry] = await audited(console, action)
        assert entry.actor == admin_actor(console) and entry.target == endpoint.id
    await admin.get("/console/settings/webhooks")
    r = await admin.post("/console/settings/webhooks", {"url": "ftp://nope"})
    assert r.status_code == 400 and 'data-code="invalid_url"' in r.text


async def test_sms_template_saved_and_removed(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/sms")
    r = await admin.post("/console/settings/sms/templates", {"name": "pickup_ready", "kind": "notice",
                                                             "text": "您的订单 ${order} 已可取餐"})
    assert r.status_code == 303
    page = (await admin.follow(r)).text
    assert 'data-template="pickup_ready"' in page
    api = (await gw.http.get("/v1/sms/settings", headers=gw.auth)).json()
    assert api["templates"]["pickup_ready"] == {"kind": "notice", "text": "您的订单 ${order} 已可取餐"}
    r = await admin.post("/console/settings/sms/templates", {"name": "bad", "kind": "notice", "text": "【签名】hi"})
    assert r.status_code == 400 and 'data-code="invalid_sms_settings"' in r.text
    r = await admin.post("/console/settings/sms/templates/pickup_ready/delete")
    assert r.status_code == 303
    assert "pickup_ready" not in (await gw.http.get("/v1/sms/settings", headers=gw.auth)).json()["templates"]
    entries = await audited(console, "sms_settings.updated")
    assert len(entries) == 2 and {e.actor for e in entries} == {admin_actor(console)}


async def test_publishable_key_created_and_revoked(console: Console) -> None:
    admin = console.admin
    await admin.get("/console/settings/publishable")
    r = await admin.follow(await admin.post("/console/settings/publishable"))
    found = re.search(r"<code>(mg_pk_test_[^<]+)</code>", r.text)
    assert found
    key_id = re.search(r'/console/settings/publishable/([^/]+)/revoke', r.text)
    assert key_id
    assert (await admin.post(f"/console/settings/publishable/{key_id.group(1)}/revoke")).status_code == 303
    assert "/revoke" not in (await admin.get("/console/settings/publishable")).text
    assert len(await audited(console, "publishable_key.revoked")) == 1


async def test_admin_adds_a_console_user_who_can_sign_in(console: Console) -> None:
    gw, admin = console.gw, console.admin
    await admin.get("/console/settings/users")
    password = "a brand new password 42"
    r = await admin.post("/console/settings/users", {"email": "Cashier@Shop.example", "name": "Cashier",
                                                     "role": "viewer", "password": password})
    assert r.status_code == 303
    page = (await admin.follow(r)).text
    assert 'data-user="cashier@shop.example"' in page and password not in page
    async with gw.rt.db.read() as session:
        user = (await session.execute(select(ConsoleUser).where(ConsoleUser.email == "cashier@shop.example"))
                ).scalar_one()
    newcomer = ConsoleClient.on(gw.app)
    try:
        assert (await newcomer.sign_in("cashier@shop.example", password)).status_code == 303
        assert (await newcomer.get("/console/settings")).status_code == 403

        # promoted to admin: the session ends (role changes revoke sessions), a new sign-in reaches settings
        await admin.get("/console/settings/users")
        assert (await admin.post(f"/console/settings/users/{user.id}/role", {"role": "admin"})).status_code == 303
        assert (await newcomer.get("/console/settings")).status_code == 303
        assert (await newcomer.sign_in("cashier@shop.example", password)).status_code == 303
        assert (await newcomer.get("/console/settings")).status_code == 200

        # disabled: the session ends and signing in is refused; enabled again: it works
        await admin.get("/console/settings/users")
        assert (await admin.post(f"/console/settings/users/{user.id}/disable")).status_code == 303
        assert (await newcomer.get("/console/settings")).status_code == 303
        assert (await newcomer.sign_in("cashier@shop.example", password)).status_code == 401
        assert (await admin.post(f"/console/settings/users/{user.id}/enable")).status_code == 303
        assert (await newcomer.sign_in("cashier@shop.example", password)).status_code == 303
    finally:
        await newcomer.aclose()
    actions = {e.action for e in await audit_by(console, admin_actor(console)) if e.target == user.id}
    assert {"console.user_created", "console.user_role_changed", "console.user_disabled",
            "console.user_enabled"} <= actions

    await admin.get("/console/settings/users")
    r = await admin.post("/console/settings/users", {"email": "short@shop.example", "role": "viewer",
                                                     "password": "short"})
    assert r.status_code == 400 and 'data-code="password_too_short"' in r.text
    r = await admin.post("/console/settings/users", {"email": "cashier@shop.example", "role": "viewer",
                                                     "password": password})
    assert r.status_code == 409 and 'data-code="user_exists"' in r.text


async def audit_by(console: Console, actor: str) -> list[AuditEntry]:
    async with console.gw.rt.db.read() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.actor == actor))).scalars())


async def test_second_factor_reset_and_last_admin_kept(console: Console) -> None:
    import pyotp

    from minigate.console import users

    gw, admin = console.gw, console.admin
    viewer_id = console.users["viewer"]["id"]
    uri = await users.start_totp(gw.rt, viewer_id)
    secret = pyotp.parse_uri(uri).secret
    await users.confirm_totp(gw.rt, viewer_id, pyotp.TOTP(secret).now())
    page = (await admin.get("/console/settings/users")).text
    assert f"/console/settings/users/{viewer_id}/totp/reset" in page
    assert (await admin.post(f"/console/settings/users/{viewer_id}/totp/reset")).status_code == 303
    async with gw.rt.db.read() as session:
        viewer = await session.get(ConsoleUser, viewer_id)
    assert viewer is not None and viewer.totp_sealed is None
    [entry] = await audited(console, "console.totp_disabled")
    assert entry.actor == admin_actor(console)

    admin_id = console.users["admin"]["id"]
    await admin.get("/console/settings/users")
    r = await admin.post(f"/console/settings/users/{admin_id}/role", {"role": "viewer"})
    assert r.status_code == 409 and 'data-code="last_admin"' in r.text


async def test_settings_forms_need_the_csrf_token(console: Console) -> None:
    admin = console.admin
    await admin.get("/console/settings/keys")
    r = await admin.post("/console/settings/keys", {"name": "forged", "scopes": "*"}, csrf="not-the-token")
    assert r.status_code == 403 and 'data-code="csrf_failed"' in r.text
    r = await admin.http.post("/console/settings/users", data={"email": "x@shop.example", "role": "admin",
                                                                "password": "a long enough password",
                                                                "csrf_token": admin.csrf},
                              headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert await console.gw.count(ApiKey) == 2
    assert await console.gw.count(ConsoleUser) == 3

