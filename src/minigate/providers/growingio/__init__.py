"""GrowingIO collect API: minigate's events forwarded as custom events (service-protocols.md §3.2)."""
