"""Unisound (云知声) voiceprint recognition (service-protocols.md §2.3)."""
