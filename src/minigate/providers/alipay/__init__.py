"""Alipay OpenAPI (v1 gateway) for mini-program payments (JSAPI_PAY) and login (payment-protocols.md §2)."""
