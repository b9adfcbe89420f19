"""Umeng+ (友盟+) OpenAPI: a mini-program's daily numbers from the ``com.umeng.umini`` APIs (service-protocols.md
§3.1)."""
