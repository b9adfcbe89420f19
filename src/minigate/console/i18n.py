"""Labels in English and Chinese. Each page module registers its own labels with :func:`register`; a label used
in a template but missing in either language fails loudly (``KeyError``), and a test renders every page in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["LANGS", "LABELS", "pick_language", "register", "translator"]

LANGS = ("en", "zh")
#: key -> (English, 中文)
LABELS: dict[str, tuple[str, str]] = {}


def register(labels: Mapping[str, tuple[str, str]]) -> None:
    for key, pair in labels.items():
        if key in LABELS and LABELS[key] != pair:
            raise ValueError(f"console label {key!r} registered twice with different texts")
        LABELS[key] = pair


def translator(lang: str) -> Callable[..., str]:
    index = 1 if lang == "zh" else 0

    def t(key: str, **values: object) -> str:
        text = LABELS[key][index]
        return text.format(**values) if values else text
    return t


def pick_language(accept_language: str | None) -> str:
    """``zh`` when the browser prefers Chinese over English, else ``en``."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


register({
    "brand": ("minigate console", "minigate 控制台"),
    "nav.dashboard": ("Dashboard", "概览"),
    "nav.orders": ("Orders", "订单"),
    "nav.approvals": ("Refund approvals", "退款审批"),
    "nav.webhooks": ("Webhooks", "Webhook"),
    "nav.reconciliation": ("Reconciliation", "对账"),
    "nav.exceptions": ("Exceptions", "异常单"),
    "nav.sms": ("SMS", "短信"),
    "nav.identity": ("Identity", "实名核验"),
    "nav.analytics": ("Analytics", "数据分析"),
    "nav.settings": ("Settings", "设置"),
    "nav.sandbox": ("Sandbox", "沙箱"),
    "nav.audit": ("Audit trail", "审计日志"),
    "nav.account": ("My account", "我的账户"),
    "nav.menu": ("Menu", "菜单"),
    "sign_in": ("Sign in", "登录"),
    "sign_out": ("Sign out", "退出"),
    "email": ("E-mail", "邮箱"),
    "password": ("Password", "密码"),
    "totp.title": ("Two-step verification", "两步验证"),
    "totp.prompt": ("Enter the 6-digit code from your authenticator app.", "请输入身份验证器中的 6 位验证码。"),
    "totp.code": ("Code", "验证码"),
    "verify": ("Verify", "验证"),
    "app": ("App", "应用"),
    "mode": ("Mode", "模式"),
    "mode.test": ("Test", "测试"),
    "mode.live": ("Live", "正式"),
    "language": ("Language", "语言"),
    "switch": ("Switch", "切换"),
    "role": ("Role", "角色"),
    "role.viewer": ("Viewer", "只读"),
    "role.operator": ("Operator", "运营"),
    "role.admin": ("Admin", "管理员"),
    "no_app": ("No app yet: create one in Settings (admins) or with `minigate apps create`.",
               "还没有应用：请在“设置”中创建（管理员），或运行 `minigate apps create`。"),
    "error.title": ("Something is not right", "出错了"),
    "error.back": ("Back", "返回"),
    "test_mode_banner": ("Test mode: the sandbox answers for every provider.", "测试模式：所有渠道由沙箱模拟。"),
    "confirm": ("Confirm", "确认"),
    "cancel": ("Cancel", "取消"),
    "save": ("Save", "保存"),
    "search": ("Search", "搜索"),
    "filter": ("Filter", "筛选"),
    "reset": ("Reset", "重置"),
    "none": ("Nothing here yet.", "暂无数据。"),
    "next_page": ("Next page", "下一页"),
    "created": ("Created", "创建时间"),
    "status": ("Status", "状态"),
    "amount": ("Amount", "金额"),
    "channel": ("Channel", "渠道"),
    "actions": ("Actions", "操作"),
    "details": ("Details", "详情"),
    "done": ("Done.", "操作成功。"),
    "from": ("From", "开始"),
    "to": ("To", "结束"),
    "account.title": ("My account", "我的账户"),
    "account.password": ("Change password", "修改密码"),
    "account.current": ("Current password", "当前密码"),
    "account.new": ("New password (12 characters or more)", "新密码（至少 12 位）"),
    "account.totp": ("Two-step verification", "两步验证"),
    "account.totp_on": ("On", "已开启"),
    "account.totp_off": ("Off", "未开启"),
    "account.totp_start": ("Set up", "开启"),
    "account.totp_secret": ("Add this secret to your authenticator app, then enter a code from it:",
                            "在身份验证器中添加此密钥，然后输入生成的验证码："),
    "account.totp_disable": ("Turn off", "关闭"),
    "login.invalid_credentials": ("Wrong e-mail or password.", "邮箱或密码错误。"),
    "login.account_locked": ("Too many failed attempts: this account is locked for a while.",
                             "失败次数过多，账户已暂时锁定。"),
    "login.invalid_totp": ("That code is not valid.", "验证码无效。"),
    "login.session_expired": ("The sign-in has expired; start again.", "登录已过期，请重新登录。"),
})
