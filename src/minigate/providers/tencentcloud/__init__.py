"""Tencent Cloud API 3.0 (TC3-HMAC-SHA256): the shared signer and client core, and the SMS provider."""
