"""Which payment providers exist, which channels they serve, and how the sandbox configures them.

A provider is registered here (or, for third-party packages, under the ``minigate.providers`` entry-point
group with an object shaped like :class:`PaymentSpec`). Nothing else in the service layer names a provider.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import httpx
from pydantic import BaseModel

from minigate.providers.bases.payment import PaymentProvider

__all__ = ["AnalyticsSpec", "IdentitySpec", "analytics_forwarder_specs", "analytics_source_specs",
           "analytics_spec", "PaymentSpec", "SandboxContext", "ServiceSpec", "SmsSpec", "channels", "identity_spec",
           "identity_specs", "payment_spec", "payment_specs", "sms_spec", "sms_specs"]


@dataclass(frozen=True, slots=True)
class SandboxContext:
    """Where the sandbox is: what providers call (``base_url``) and what browsers open (``browser_url``)."""

    credentials: Callable[[str], dict[str, str]]
    base_url: str              # e.g. http://sandbox (in-process) or http://127.0.0.1:8900 (external)
    browser_url: str           # e.g. http://127.0.0.1:8000/sandbox


@dataclass(frozen=True, slots=True)
class PaymentSpec:
    name: str
    channels: frozenset[str]
    provider: str              # "module:Class", built as Class(config, client)
    config: str                # "module:Model"
    sandbox_config: Callable[[SandboxContext], dict[str, Any]]
    #: "module:function" turning a credentials JSON into (config, {other provider: config}); optional
    normalise: str | None = None

    def split_credentials(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        if self.normalise is None:
            return dict(raw), {}
        result: tuple[dict[str, Any], dict[str, dict[str, Any]]] = _load(self.normalise)(dict(raw))
        return result

    def build(self, raw: Mapping[str, Any], client: httpx.AsyncClient) -> PaymentProvider:
        config_cls: type[BaseModel] = _load(self.config)
        provider_cls: Callable[[BaseModel, httpx.AsyncClient], PaymentProvider] = _load(self.provider)
        return provider_cls(config_cls(**raw), client)

    def config_model(self) -> type[BaseModel]:
        model: type[BaseModel] = _load(self.config)
        return model


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _wechatpay_sandbox(ctx: SandboxContext) -> dict[str, Any]:
    creds = ctx.credentials("wechatpay")
    return {
        "mchid": creds["mchid"], "appid": creds["appid"], "merchant_serial_no": creds["merchant_serial_no"],
        "merchant_private_key": creds["merchant_private_key"], "apiv3_key": creds["apiv3_key"],
        "platform_public_key": creds["platform_public_key"],
        "platform_public_key_id": creds["platform_public_key_id"],
        "platform_certificates": [creds["platform_certificate"]],
        "verify_mode": "mixed", "base_url": f"{ctx.base_url}/wechatpay",
    }


def _alipay_sandbox(ctx: SandboxContext) -> dict[str, Any]:
    creds = ctx.credentials("alipay")
    return {"app_id": creds["app_id"], "seller_id": creds["seller_id"], "app_private_key": creds["app_private_key"],
            "alipay_public_key": creds["alipay_public_key"], "base_url": f"{ctx.base_url}/alipay/gateway.do"}


def _jdpay_sandbox(ctx: SandboxContext) -> dict[str, Any]:
    creds = ctx.credentials("jdpay")
    return {"merchant": creds["merchant"], "merchant_private_key": creds["merchant_private_key"],
            "jd_public_key": creds["jd_public_key"], "des_key": creds["des_key"],
            "base_url": f"{ctx.base_url}/jdpay",
            # the cashier is opened by the payer's web-view, so it must be an address a browser reaches
            "cashier_url": f"{ctx.browser_url}/jdpay/jdpay/saveOrder"}


_BUILTIN: tuple[PaymentSpec, ...] = (
    PaymentSpec(name="wechatpay", channels=frozenset({"wechat_mini"}),
                provider="minigate.providers.wechatpay.provider:WeChatPayProvider",
                config="minigate.providers.wechatpay.config:WeChatPayConfig",
                sandbox_config=_wechatpay_sandbox,
                normalise="minigate.providers.wechatpay.config:from_credentials"),
    PaymentSpec(name="alipay", channels=frozenset({"alipay_mini"}),
                provider="minigate.providers.alipay.provider:AlipayProvider",
                config="minigate.providers.alipay.config:AlipayConfig",
                sandbox_config=_alipay_sandbox),
    PaymentSpec(name="jdpay", channels=frozenset({"jdpay_h5"}),
                provider="minigate.providers.jdpay.provider:JDPayProvider",
                config="minigate.providers.jdpay.config:JDPayConfig",
                sandbox_config=_jdpay_sandbox),
)


@functools.cache
def payment_specs() -> dict[str, PaymentSpec]:
    """Built-in providers plus third-party entry points, read once per process (reading the installed
    packages' metadata costs milliseconds; it used to happen several times per order)."""
    specs = {spec.name: spec for spec in _BUILTIN}
    for entry in entry_points(group="minigate.providers"):
        spec = entry.load()
        specs.setdefault(spec.name, spec)
    return specs


def payment_spec(name: str) -> PaymentSpec | None:
    return payment_specs().get(name)


def channels() -> dict[str, str]:
    """channel -> provider name"""
    return {channel: spec.name for spec in payment_specs().values() for channel in spec.channels}


# --------------------------------------------------------------------------- services (SMS, identity)

@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service provider (SMS, identity, ...): its client, its configuration model and how the sandbox
    configures it. Third-party packages register one under ``minigate.sms_providers`` /
    ``minigate.identity_providers``."""

    name: str
    provider: str              # "module:Class", built as Class(config, client)
    config: str                # "module:Model"
    sandbox_config: str        # "module:function", (SandboxContext) -> config dict

    def config_model(self) -> type[BaseModel]:
        model: type[BaseModel] = _load(self.config)
        return model

    def build(self, raw: Mapping[str, Any], client: httpx.AsyncClient) -> Any:
        return _load(self.provider)(self.config_model()(**raw), client)

    def sandbox(self, ctx: SandboxContext) -> dict[str, Any]:
        result: dict[str, Any] = _load(self.sandbox_config)(ctx)
        return result


SmsSpec = ServiceSpec
IdentitySpec = ServiceSpec

_BUILTIN_SMS: tuple[SmsSpec, ...] = (
    SmsSpec(name="aliyun-sms", provider="minigate.providers.aliyun_sms.provider:AliyunSmsProvider",
            config="minigate.providers.aliyun_sms.config:AliyunSmsConfig",
            sandbox_config="minigate.providers.aliyun_sms.config:sandbox_config"),
    SmsSpec(name="tencentcloud", provider="minigate.providers.tencentcloud.sms:TencentSmsProvider",
            config="minigate.providers.tencentcloud.config:TencentSmsConfig",
            sandbox_config="minigate.providers.tencentcloud.config:sandbox_config"),
    SmsSpec(name="yunpian", provider="minigate.providers.yunpian.provider:YunpianProvider",
            config="minigate.providers.yunpian.config:YunpianConfig",
            sandbox_config="minigate.providers.yunpian.config:sandbox_config"),
)


def _with_entry_points(builtin: tuple[ServiceSpec, ...], group: str) -> dict[str, ServiceSpec]:
    specs = {spec.name: spec for spec in builtin}
    for entry in entry_points(group=group):
        spec = entry.load()
        specs.setdefault(spec.name, spec)
    return specs


@functools.cache
def sms_specs() -> dict[str, SmsSpec]:
    """Built-in SMS providers plus third-party entry points, in the default failover order."""
    return _with_entry_points(_BUILTIN_SMS, "minigate.sms_providers")


def sms_spec(name: str) -> SmsSpec | None:
    return sms_specs().get(name)


_BUILTIN_IDENTITY: tuple[IdentitySpec, ...] = (
    IdentitySpec(name="tencent-faceid", provider="minigate.providers.tencentcloud.faceid:TencentFaceIdProvider",
                 config="minigate.providers.tencentcloud.faceid:TencentFaceIdConfig",
                 sandbox_config="minigate.providers.tencentcloud.faceid:sandbox_config"),
    IdentitySpec(name="baidu", provider="minigate.providers.baidu.provider:BaiduFaceProvider",
                 config="minigate.providers.baidu.config:BaiduFaceConfig",
                 sandbox_config="minigate.providers.baidu.config:sandbox_config"),
    IdentitySpec(name="unisound", provider="minigate.providers.unisound.provider:UnisoundVoiceprintProvider",
                 config="minigate.providers.unisound.config:UnisoundConfig",
                 sandbox_config="minigate.providers.unisound.config:sandbox_config"),
)


@functools.cache
def identity_specs() -> dict[str, IdentitySpec]:
    """Built-in identity providers plus third-party entry points (``minigate.identity_providers``)."""
    return _with_entry_points(_BUILTIN_IDENTITY, "minigate.identity_providers")


def identity_spec(name: str) -> IdentitySpec | None:
    return identity_specs().get(name)


AnalyticsSpec = ServiceSpec

#: destinations minigate forwards events to (third-party group ``minigate.analytics_forwarders``)
_BUILTIN_FORWARDERS: tuple[AnalyticsSpec, ...] = (
    AnalyticsSpec(name="growingio", provider="minigate.providers.growingio.provider:GrowingIOForwarder",
                  config="minigate.providers.growingio.config:GrowingIOConfig",
                  sandbox_config="minigate.providers.growingio.config:sandbox_config"),
    AnalyticsSpec(name="youshu", provider="minigate.providers.youshu.provider:YoushuForwarder",
                  config="minigate.providers.youshu.config:YoushuConfig",
                  sandbox_config="minigate.providers.youshu.config:sandbox_config"),
)

#: sources minigate pulls numbers from (third-party group ``minigate.analytics_sources``)
_BUILTIN_SOURCES: tuple[AnalyticsSpec, ...] = (
    AnalyticsSpec(name="wechat-datacube", provider="minigate.providers.wechat.datacube:WeChatDatacubeSource",
                  config="minigate.providers.wechat.datacube:WeChatDatacubeConfig",
                  sandbox_config="minigate.providers.wechat.datacube:sandbox_config"),
    AnalyticsSpec(name="umeng", provider="minigate.providers.umeng.provider:UmengSource",
                  config="minigate.providers.umeng.config:UmengConfig",
                  sandbox_config="minigate.providers.umeng.config:sandbox_config"),
)


@functools.cache
def analytics_forwarder_specs() -> dict[str, AnalyticsSpec]:
    return _with_entry_points(_BUILTIN_FORWARDERS, "minigate.analytics_forwarders")


@functools.cache
def analytics_source_specs() -> dict[str, AnalyticsSpec]:
    return _with_entry_points(_BUILTIN_SOURCES, "minigate.analytics_sources")


def analytics_spec(name: str) -> AnalyticsSpec | None:
    return analytics_forwarder_specs().get(name) or analytics_source_specs().get(name)
