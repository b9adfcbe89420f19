"""JD Pay (京东支付) V2.0: H5 cashier in a mini-program ``<web-view>``, XML server API, notifications."""

from minigate.providers.jdpay.config import JDPayConfig
from minigate.providers.jdpay.provider import JDPayProvider

__all__ = ["JDPayConfig", "JDPayProvider"]
