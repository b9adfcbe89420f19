"""SMS templates as minigate knows them: a name, a kind, and a text with ``{name}`` placeholders.

The same names are mapped, per provider, to that provider's approved template id and variable order
(``templates`` in each provider's credentials). The default set below is what every sandbox account has
"approved"; apps may add their own names in their SMS settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_TEMPLATES", "KINDS", "Template"]

#: verification codes, transactional notices (order paid, shipped, ...), marketing (consent required)
KINDS = ("verification", "notice", "marketing")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    text: str
    kind: str

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable names in order of first appearance (the positional order Tencent uses)."""
        seen: list[str] = []
        for name in _PLACEHOLDER.findall(self.text):
            if name not in seen:
                seen.append(name)
        return tuple(seen)

    def render(self, values: Mapping[str, str]) -> str:
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


DEFAULT_TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("verification_code", "您的验证码为{code}，{minutes}分钟内有效，请勿泄露于他人。", "verification"),
    Template("order_paid", "您的订单{order}已支付成功，金额{amount}元，感谢您的惠顾。", "notice"),
    Template("order_shipped", "您的订单{order}已发货，{carrier}运单号{tracking}。", "notice"),
    Template("refund_succeeded", "您的订单{order}已退款{amount}元，将原路退回。", "notice"),
    Template("payment_reminder", "您的订单{order}尚未支付，将在{minutes}分钟后自动关闭。", "notice"),
    Template("marketing_promo", "{promo}，回TD退订", "marketing"),
)}
