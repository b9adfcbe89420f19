"""Yunpian (云片) SMS API v2: template and text sends, record lookup, status and reply pushes
(service-protocols.md §1.3)."""
