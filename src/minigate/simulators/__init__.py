"""Sandbox simulators: ASGI apps speaking each provider's wire protocol with real cryptography.

Use :class:`Sandbox` (all simulators, each under its prefix) or ``Sandbox.app_for(name)`` (one at the root).
"""

from __future__ import annotations

from minigate.simulators._core import Clock, CredentialStore, Deliverer, Faults, default_state_dir
from minigate.simulators.sandbox import PROVIDERS, Sandbox, credentials_for

__all__ = ["PROVIDERS", "Clock", "CredentialStore", "Deliverer", "Faults", "Sandbox", "credentials_for",
           "default_state_dir"]
