"""Tencent Youshu (腾讯有数) safe-report: minigate's events forwarded as behaviour data (service-protocols.md §3.3)."""
