"""WeChat Pay API v3 (direct merchant): JSAPI / mini-program payments, refunds, notifications, bills."""
