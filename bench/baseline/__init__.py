"""The baseline: what most teams write today (Flask + wechatpayv3 + SQLAlchemy), for ratios."""
