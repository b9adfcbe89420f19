"""Use cases: apps and keys, checkout, refunds, notifications, webhooks, login. The API and CLI stay thin."""
