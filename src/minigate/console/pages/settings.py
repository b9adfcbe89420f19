"""Settings (admins only): apps, API keys, provider credentials, SMS templates, webhook endpoints, analytics
publishable keys and console users.

Each page calls the same service functions as the ``/v1`` routes for the app and mode the session looks at. A
secret made here (an API key, a webhook signing secret, an app's first keys) appears once, in the answer page of
the action that made it, and never again: lists show hints and fingerprints only, and the credential form is
always empty (a field left blank keeps the stored value, so an admin never needs to see a secret to change
another field). The services write the audit entries, with the signed-in person as the actor.
"""

from __future__ import annotations

import json
import re
import types
from datetime import UTC
from typing import Any, Literal, Union, get_args, get_origin

from fastapi import Request
from fastapi.responses import Response
from pydantic import SecretStr
from sqlalchemy import select

from minigate.console import users
from minigate.console.i18n import register
from minigate.console.users import ROLES, Operator
from minigate.console.web import (
    AdminDep,
    Form,
    app_context,
    done,
    read_form,
    redirect,
    render,
    request_apps,
    router,
    runtime,
)
from minigate.errors import InvalidRequest, NotFound
from minigate.providers import registry
from minigate.services import analytics, apps, events, sms_settings
from minigate.services.apps import RESOURCES, AppContext
from minigate.services.runtime import Runtime
from minigate.store.tables import AppCredential

__all__: list[str] = []

#: overlaps offered when a key or a webhook secret is rolled (seconds the previous one keeps working)
OVERLAPS = (0, 3600, 86400, 7 * 86400)
_TABS = ("apps", "keys", "credentials", "sms", "webhooks", "publishable", "users")
_PEM_NAME = re.compile(r"private_key|public_key|certificate|_pem$|^pem")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)

register({
    "settings.title": ("Settings", "设置"),
    "settings.tab.apps": ("Apps", "应用"),
    "settings.tab.keys": ("API keys", "API 密钥"),
    "settings.tab.credentials": ("Provider credentials", "渠道凭证"),
    "settings.tab.sms": ("SMS templates", "短信模板"),
    "settings.tab.webhooks": ("Webhook endpoints", "Webhook 端点"),
    "settings.tab.publishable": ("Analytics keys", "埋点公钥"),
    "settings.tab.users": ("Console users", "控制台用户"),
    "settings.scope_note": ("For app {app} in {mode} mode.", "当前应用 {app}，{mode}模式。"),
    "settings.id": ("ID", "ID"),
    "settings.name": ("Name", "名称"),
    "settings.apps.create": ("Create an app", "创建应用"),
    "settings.apps.created": ("App created", "应用已创建"),
    "settings.shown_once": ("Copy it now: it is shown this once and never again.",
                            "请立即复制：此内容只显示这一次，之后无法再查看。"),
    "settings.test_key": ("Test API key", "测试 API 密钥"),
    "settings.live_key": ("Live API key", "正式 API 密钥"),
    "settings.back": ("Back to settings", "返回设置"),
    "settings.keys.hint": ("Key", "密钥"),
    "settings.secret": ("Signing secret", "签名密钥"),
    "settings.keys.scopes": ("Scopes", "权限范围"),
    "settings.keys.expires": ("Expires", "过期时间"),
    "settings.keys.revoked": ("Revoked", "已吊销"),
    "settings.keys.active": ("Active", "有效"),
    "settings.keys.create": ("Create a key", "创建密钥"),
    "settings.keys.expires_in_days": ("Expires after (days, empty: never)", "有效期（天，留空为永久）"),
    "settings.keys.all_scopes": ("Everything (*)", "全部权限 (*)"),
    "settings.keys.created": ("New API key", "新 API 密钥"),
    "settings.keys.rolled": ("Key rolled: the new key", "密钥已轮换：新密钥"),
    "settings.keys.roll": ("Roll", "轮换"),
    "settings.keys.revoke": ("Revoke", "吊销"),
    "settings.keys.overlap": ("Previous key keeps working", "旧密钥保留时长"),
    "settings.overlap.0": ("not at all", "立即失效"),
    "settings.overlap.3600": ("1 hour", "1 小时"),
    "settings.overlap.86400": ("1 day", "1 天"),
    "settings.overlap.604800": ("7 days", "7 天"),
    "settings.cred.provider": ("Provider", "渠道"),
    "settings.cred.updated": ("Updated", "更新时间"),
    "settings.cred.fingerprint": ("Fingerprint", "指纹"),
    "settings.cred.certificates": ("Certificates", "证书"),
    "settings.cred.expires_in": ("expires in {days} days", "{days} 天后过期"),
    "settings.cred.expiring": ("Certificate expires soon", "证书即将过期"),
    "settings.cred.none_stored": ("No credentials stored: test mode uses the sandbox's.",
                                  "未保存凭证：测试模式使用沙箱凭证。"),
    "settings.cred.upload": ("Upload or replace credentials", "上传或替换凭证"),
    "settings.cred.pick": ("Choose a provider", "选择渠道"),
    "settings.cred.blank_keeps": ("Stored values are never shown. A field left blank keeps its stored value.",
                                  "已保存的值不会显示。留空的字段保留原值。"),
    "settings.cred.json": ("Or paste the whole credentials JSON", "或粘贴完整的凭证 JSON"),
    "settings.cred.required": ("required", "必填"),
    "settings.sms.sign_name": ("Signature (2-12 characters, without 【】)", "短信签名（2-12 个字符，不含【】）"),
    "settings.sms.templates": ("Templates", "模板"),
    "settings.sms.kind": ("Kind", "类型"),
    "settings.sms.text": ("Text", "内容"),
    "settings.sms.own": ("Own", "自定义"),
    "settings.sms.default": ("Default", "默认"),
    "settings.sms.save_template": ("Add or replace a template", "添加或替换模板"),
    "settings.sms.delete": ("Remove", "删除"),
    "settings.sms.kind.verification": ("Verification code", "验证码"),
    "settings.sms.kind.notice": ("Notice", "通知"),
    "settings.sms.kind.marketing": ("Marketing", "营销"),
    "settings.wh.url": ("URL", "URL"),
    "settings.wh.events": ("Events", "事件"),
    "settings.wh.events_help": ("Event types, comma separated (empty: every event)",
                                "事件类型，用逗号分隔（留空为全部）"),
    "settings.wh.create": ("Add an endpoint", "添加端点"),
    "settings.wh.created": ("Endpoint added: its signing secret", "端点已添加：签名密钥"),
    "settings.wh.rotated": ("Signing secret rotated: the new secret", "签名密钥已轮换：新密钥"),
    "settings.wh.disable": ("Disable", "停用"),
    "settings.wh.rotate": ("Rotate secret", "轮换密钥"),
    "settings.pk.create": ("Create a publishable key", "创建公钥"),
    "settings.pk.note": ("Publishable keys are public: they only send analytics events from the mini-program.",
                         "公钥可公开：仅用于小程序上报埋点事件。"),
    "settings.users.email": ("E-mail", "邮箱"),
    "settings.users.second_factor": ("Two-step", "两步验证"),
    "settings.users.last_login": ("Last sign-in", "最近登录"),
    "settings.users.add": ("Add a console user", "添加控制台用户"),
    "settings.users.password": ("Initial password (12 characters or more; tell it to the person yourself)",
                                "初始密码（至少 12 位，请自行告知对方）"),
    "settings.users.change_role": ("Change role", "修改角色"),
    "settings.users.disable": ("Disable", "停用"),
    "settings.users.enable": ("Enable", "启用"),
    "settings.users.reset_totp": ("Reset two-step", "重置两步验证"),
    "settings.users.disabled": ("disabled", "已停用"),
    "settings.users.locked": ("locked", "已锁定"),
    "settings.on": ("on", "开"),
    "settings.off": ("off", "关"),
})


# -- helpers -----------------------------------------------------------------------------------------------------


async def _page(request: Request, op: Operator, tab: str, template: str, *, status_code: int = 200,
                **context: Any) -> Response:
    app_list = await request_apps(request)
    ctx = await app_context(request, op) if app_list else None
    app_name = next((a["name"] for a in app_list if ctx and a["id"] == ctx.app_id), "")
    return await render(request, op, template, status_code=status_code, tab=tab, tabs=_TABS, ctx=ctx,
                        app_name=app_name, **context)


def _overlap(form: Form, name: str) -> int:
    value = form.integer(name, required=False, minimum=0)
    if value is None:
        return 86400
    if value not in OVERLAPS:
        raise InvalidRequest(f"{name} must be one of {', '.join(map(str, OVERLAPS))}", code="parameter_invalid",
                             param=name)
    return value


def _payment_or_service_providers() -> list[str]:
    names = [*registry.payment_specs(), "wechat", *registry.sms_specs(), *registry.identity_specs(),
             *registry.analytics_forwarder_specs(), *registry.analytics_source_specs()]
    return list(dict.fromkeys(names))


def _field_kind(annotation: Any) -> tuple[str, list[str]]:
    """How a config field is typed in: secret, choice, list, bool, number or text."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _field_kind(inner[0])
    if annotation is SecretStr:
        return "secret", []
    if origin is Literal:
        return "choice", [str(a) for a in get_args(annotation)]
    if origin in (tuple, list):
        return "list", []
    if annotation is bool:
        return "choice", ["true", "false"]
    if annotation in (int, float):
        return "number", []
    return "text", []


def credential_fields(provider: str) -> list[dict[str, Any]]:
    """The form of a provider's config model: one entry per field (PEM-like fields as text areas)."""
    model = apps._config_model(provider)
    if model is None:
        raise InvalidRequest(f"unknown provider {provider[:40]!r}", code="parameter_invalid", param="provider")
    fields = []
    for name, info in model.model_fields.items():
        kind, choices = _field_kind(info.annotation)
        help_text = info.description or ""
        multiline = kind == "list" or bool(_PEM_NAME.search(name)) or "PEM" in help_text
        default = None
        if not info.is_required() and kind != "secret" and info.default is not None \
                and isinstance(info.default, str | int | float | bool):
            default = str(info.default).lower() if isinstance(info.default, bool) else str(info.default)
        fields.append({"name": name, "kind": kind, "choices": choices, "required": info.is_required(),
                       "multiline": multiline, "help": help_text, "default": default})
    return fields


def _field_value(raw: str, kind: str) -> str | list[str]:
    """A typed value: browsers send text areas with CRLF line ends, PEM files end with a newline; a list field
    holds PEM blocks (certificates) or one value per line."""
    raw = raw.replace("\r\n", "\n").strip()
    if kind == "list":
        blocks = [m.group(0) + "\n" for m in _PEM_BLOCK.finditer(raw)]
        return blocks if blocks else [line.strip() for line in raw.splitlines() if line.strip()]
    return raw + "\n" if raw.startswith("-----BEGIN ") else raw


async def _stored_config(rt: Runtime, ctx: AppContext, provider: str) -> dict[str, Any]:
    async with rt.db.read() as session:
        row = (await session.execute(select(AppCredential).where(
            AppCredential.app_id == ctx.app_id, AppCredential.mode == ctx.mode,
            AppCredential.provider == provider))).scalar_one_or_none()
    if row is None:
        return {}
    stored: dict[str, Any] = json.loads(rt.vault.open(row.sealed_config, context=f"credentials:{provider}"))
    return stored


# -- apps ----------------------------------------------------------------------------------------------------------


@router.get("/settings")
async def settings_apps(request: Request, op: AdminDep) -> Response:
    return await _page(request, op, "apps", "settings_apps.html")


@router.post("/settings/apps")
async def settings_apps_create(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    created = await apps.create_app(runtime(request), name=form.text("name", max_length=120))
    return await _page(request, op, "apps", "settings_secret.html", title_key="settings.apps.created",
                       secrets=[("settings.id", created.id, False), ("settings.test_key", created.test_key, True),
                                ("settings.live_key", created.live_key, True)],
                       back="/console/settings")


# -- API keys ------------------------------------------------------------------------------------------------------


@router.get("/settings/keys")
async def settings_keys(request: Request, op: AdminDep) -> Response:
    ctx = await app_context(request, op)
    keys = list(reversed(await apps.list_api_keys(runtime(request), ctx)))
    return await _page(request, op, "keys", "settings_keys.html", keys=keys, resources=RESOURCES,
                       overlaps=OVERLAPS)


@router.post("/settings/keys")
async def settings_keys_create(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    ctx = await app_context(request, op)
    days = form.integer("expires_in_days", required=False, minimum=1)
    scopes = form.all("scopes")
    if not scopes:
        raise InvalidRequest("choose at least one scope", code="parameter_missing", param="scopes")
    view = await apps.create_api_key(runtime(request), ctx, name=form.text("name", max_length=120), scopes=scopes,
                                     expires_in=days * 86400 if days is not None else None)
    return await _page(request, op, "keys", "settings_secret.html", title_key="settings.keys.created",
                       secrets=[("settings.name", view["name"], False), ("settings.keys.hint", view["key"], True)],
                       back="/console/settings/keys")


@router.post("/settings/keys/{key_id}/roll")
async def settings_keys_roll(request: Request, key_id: str, op: AdminDep) -> Response:
    form = await read_form(request, op)
    ctx = await app_context(request, op)
    view = await apps.roll_api_key(runtime(request), ctx, key_id, expire_previous_in=_overlap(form, "overlap"))
    return await _page(request, op, "keys", "settings_secret.html", title_key="settings.keys.rolled",
                       secrets=[("settings.name", view["name"] or "", False),
                                ("settings.keys.hint", view["key"], True)],
                       back="/console/settings/keys")


@router.post("/settings/keys/{key_id}/revoke")
async def settings_keys_revoke(request: Request, key_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    await apps.revoke_api_key(runtime(request), await app_context(request, op), key_id)
    return done("/console/settings/keys")


# -- provider credentials ----------------------------------------------------------------------------------------


@router.get("/settings/credentials")
async def settings_credentials(request: Request, op: AdminDep, provider: str | None = None) -> Response:
    from minigate.cli.keys import EXPIRY_WARNING_DAYS, describe_credentials

    rt = runtime(request)
    ctx = await app_context(request, op)
    async with rt.db.read() as session:
        rows = list((await session.execute(select(AppCredential).where(
            AppCredential.app_id == ctx.app_id, AppCredential.mode == ctx.mode)
            .order_by(AppCredential.provider))).scalars())
    now = rt.now().astimezone(UTC)
    stored = []
    for row in rows:
        config = json.loads(rt.vault.open(row.sealed_config, context=f"credentials:{row.provider}"))
        described = describe_credentials(row.provider, config, now)
        stored.append({"provider": row.provider, "updated": row.updated_at, **described,
                       "expiring": any(c["days_left"] < EXPIRY_WARNING_DAYS for c in described["certificates"])})
    providers = _payment_or_service_providers()
    chosen = provider if provider in providers else None
    return await _page(request, op, "credentials", "settings_credentials.html", stored=stored, providers=providers,
                       provider=chosen, fields=credential_fields(chosen) if chosen else [])


@router.post("/settings/credentials")
async def settings_credentials_set(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    provider = form.text("provider", max_length=40)
    fields = credential_fields(provider)
    pasted = form.get("json", "").strip()
    if pasted:
        try:
            config = json.loads(pasted)
        except ValueError:
            raise InvalidRequest("the credentials JSON cannot be read", code="parameter_invalid",
                                 param="json") from None
        if not isinstance(config, dict):
            raise InvalidRequest("the credentials JSON must be an object", code="parameter_invalid", param="json")
    else:
        config = await _stored_config(rt, ctx, provider)
        for field in fields:
            raw = form.get(f"f_{field['name']}", "")
            if raw.strip():
                config[field["name"]] = _field_value(raw, field["kind"])
    await apps.set_credentials(rt, app_id=ctx.app_id, mode=ctx.mode, provider=provider, config=config)
    return done("/console/settings/credentials")


# -- SMS templates -------------------------------------------------------------------------------------------------


async def _save_sms(rt: Runtime, ctx: AppContext, data: dict[str, Any], what: str) -> None:
    await sms_settings.save(rt, ctx, data, change=what)


@router.get("/settings/sms")
async def settings_sms(request: Request, op: AdminDep) -> Response:
    ctx = await app_context(request, op)
    current = await sms_settings.load(runtime(request), ctx)
    templates = []
    for name in current.template_names():
        found = current.template(name)
        if found is not None:
            templates.append({"name": name, "kind": found.kind, "text": found.text, "own": name in current.templates})
    return await _page(request, op, "sms", "settings_sms.html", sms=current, templates=templates)


@router.post("/settings/sms/sign_name")
async def settings_sms_sign(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    data = (await sms_settings.load(rt, ctx)).model_dump(mode="json")
    data["sign_name"] = form.text("sign_name", required=False, max_length=40) or None
    await _save_sms(rt, ctx, data, "sign_name")
    return done("/console/settings/sms")


@router.post("/settings/sms/templates")
async def settings_sms_template(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    name = form.text("name", max_length=64)
    if not re.fullmatch(r"[a-z0-9_]{1,64}", name):
        raise InvalidRequest("a template name is lower-case letters, digits and _", code="parameter_invalid",
                             param="name")
    data = (await sms_settings.load(rt, ctx)).model_dump(mode="json")
    data["templates"][name] = {"kind": form.text("kind", max_length=20), "text": form.text("text", max_length=500)}
    await _save_sms(rt, ctx, data, f"template {name} saved")
    return done("/console/settings/sms")


@router.post("/settings/sms/templates/{name}/delete")
async def settings_sms_template_delete(request: Request, name: str, op: AdminDep) -> Response:
    await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    data = (await sms_settings.load(rt, ctx)).model_dump(mode="json")
    if name not in data["templates"]:
        raise NotFound("no such template of the app's own", code="resource_missing", param="name")
    del data["templates"][name]
    await _save_sms(rt, ctx, data, f"template {name} removed")
    return done("/console/settings/sms")


# -- webhook endpoints ---------------------------------------------------------------------------------------------


@router.get("/settings/webhooks")
async def settings_webhooks(request: Request, op: AdminDep) -> Response:
    ctx = await app_context(request, op)
    rows = await events.list_endpoints(runtime(request), ctx)
    endpoints = [events.endpoint_view(r) for r in reversed(rows)]
    return await _page(request, op, "webhooks", "settings_webhooks.html", endpoints=endpoints,
                       event_types=sorted(events.EVENT_TYPES), overlaps=OVERLAPS)


@router.post("/settings/webhooks")
async def settings_webhooks_create(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    wanted = [e.strip() for e in form.text("events", required=False, max_length=1000).split(",") if e.strip()]
    view = await events.create_endpoint(rt, ctx, url=form.text("url", max_length=2048), enabled_events=wanted)
    return await _page(request, op, "webhooks", "settings_secret.html", title_key="settings.wh.created",
                       secrets=[("settings.wh.url", view["url"], False), ("settings.secret", view["secret"], True)],
                       back="/console/settings/webhooks")


@router.post("/settings/webhooks/{endpoint_id}/disable")
async def settings_webhooks_disable(request: Request, endpoint_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    await events.delete_endpoint(rt, ctx, endpoint_id)
    return done("/console/settings/webhooks")


@router.post("/settings/webhooks/{endpoint_id}/rotate")
async def settings_webhooks_rotate(request: Request, endpoint_id: str, op: AdminDep) -> Response:
    form = await read_form(request, op)
    rt = runtime(request)
    ctx = await app_context(request, op)
    overlap = _overlap(form, "overlap")
    view = await events.rotate_secret(rt, ctx, endpoint_id, overlap_seconds=overlap)
    return await _page(request, op, "webhooks", "settings_secret.html", title_key="settings.wh.rotated",
                       secrets=[("settings.wh.url", view["url"], False), ("settings.secret", view["secret"], True)],
                       back="/console/settings/webhooks")


# -- analytics publishable keys ------------------------------------------------------------------------------------


@router.get("/settings/publishable")
async def settings_publishable(request: Request, op: AdminDep) -> Response:
    ctx = await app_context(request, op)
    keys = list(reversed(await analytics.list_publishable_keys(runtime(request), ctx)))
    return await _page(request, op, "publishable", "settings_publishable.html", keys=keys)


@router.post("/settings/publishable")
async def settings_publishable_create(request: Request, op: AdminDep) -> Response:
    await read_form(request, op)
    await analytics.create_publishable_key(runtime(request), await app_context(request, op))
    return done("/console/settings/publishable")


@router.post("/settings/publishable/{key_id}/revoke")
async def settings_publishable_revoke(request: Request, key_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    await analytics.revoke_publishable_key(runtime(request), await app_context(request, op), key_id)
    return done("/console/settings/publishable")


# -- console users -------------------------------------------------------------------------------------------------


@router.get("/settings/users")
async def settings_users(request: Request, op: AdminDep) -> Response:
    people = list(reversed(await users.list_users(runtime(request))))
    now = runtime(request).now()
    for person in people:
        person["locked"] = person["locked_until"] is not None and person["locked_until"] > now
    return await _page(request, op, "users", "settings_users.html", people=people, roles=ROLES)


@router.post("/settings/users")
async def settings_users_add(request: Request, op: AdminDep) -> Response:
    form = await read_form(request, op)
    await users.create_user(runtime(request), email=form.text("email", max_length=254),
                            name=form.text("name", required=False, max_length=120),
                            role=form.text("role", max_length=20), password=form.get("password", "")[:300],
                            actor=op.actor)
    return done("/console/settings/users")


@router.post("/settings/users/{user_id}/role")
async def settings_users_role(request: Request, user_id: str, op: AdminDep) -> Response:
    form = await read_form(request, op)
    await users.set_role(runtime(request), user_id, form.text("role", max_length=20), actor=op.actor)
    return done("/console/settings/users")


@router.post("/settings/users/{user_id}/disable")
async def settings_users_disable(request: Request, user_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    await users.set_disabled(runtime(request), user_id, True, actor=op.actor)
    return done("/console/settings/users")


@router.post("/settings/users/{user_id}/enable")
async def settings_users_enable(request: Request, user_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    await users.set_disabled(runtime(request), user_id, False, actor=op.actor)
    return done("/console/settings/users")


@router.post("/settings/users/{user_id}/totp/reset")
async def settings_users_totp_reset(request: Request, user_id: str, op: AdminDep) -> Response:
    await read_form(request, op)
    await users.disable_totp(runtime(request), user_id, actor=op.actor)
    return redirect("/console/settings/users", notice="done")
