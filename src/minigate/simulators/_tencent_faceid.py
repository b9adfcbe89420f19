"""FaceID (service ``faceid``, version 2018-03-01) inside the Tencent Cloud simulator (service-protocols.md §2.1).

The actions are rows of the account's :class:`~minigate.simulators.tencentcloud.Tc3Gateway`, so they get its
checks (TC3 signature, clock window, unknown parameters, next-call faults) before the handlers here run.

- ``IdCardVerification``: ``Result`` from the authority's records (``POST /_sandbox/persons``): ``"0"`` the ID is
  registered under that name, ``"-1"`` under another name, ``"-5"`` not registered, ``"-2"`` the ID fails
  GB 11643 (format, date, check character, lower-case ``x``), ``"-3"`` the name is malformed, ``"-7"`` more than
  ``id_checks_per_day`` checks of one ID in one Beijing day.
- ``DetectAuth``: the sandbox rule needs ``IdCard`` and ``Name`` (``MissingParameter``); a wrong ``RuleId`` is
  ``InvalidParameterValue.RuleIdNotExist``; a bad ID / name ``FailedOperation.IdFormatError`` /
  ``NameFormatError``; ``ImageBase64`` (the merchant's own comparison photo) must decode
  (``FailedOperation.ImageDecodeFailed``) and stay under 3 MB (``FailedOperation.ImageSizeTooLarge``). Answers a
  ``BizToken`` (valid 7200 s) and a ``Url`` (here: the session's status page in the sandbox).
- ``GetDetectInfoEnhanced`` / legacy ``GetDetectInfo`` (the same objects in the JSON string ``DetectInfo``): the
  parts ``InfoType`` asks for (``Text`` for 0/1, ``IdCardData`` 2, ``BestFrame`` 3, ``VideoData`` 4). Unknown
  token ``InvalidParameterValue.BizTokenIllegal``; unfinished after 7200 s or finished more than 3 days ago
  ``InvalidParameterValue.BizTokenExpired``. **A session the user has not finished** answers ``Text`` with
  ``ErrCode`` 17 and ``ErrMsg`` "本次流程未完成" (Tencent's return code for an unfinished flow), every verdict field
  null -- how the real service answers then is not confirmed.

The user's part -- running the flow in the mini-program -- is ``POST /_sandbox/faceid/complete
{"biz_token", "outcome"?, "photo"?}``. Without ``outcome`` the verdict follows the records: the ID registered
under that name passes (``Sim`` >= 90), otherwise ``ErrCode`` 2006 (name and ID do not match); with a ``photo``
(base64) compared by content to the ``ImageBase64`` of ``DetectAuth`` or else the registered photo: same bytes pass,
other bytes fail with 2016 (``Sim`` <= 40), bytes starting ``NOFACE`` fail with 2010 (no complete face). Explicit
outcomes: ``pass``, ``liveness_failed`` (1002), ``mismatch`` (2015), ``low_similarity`` (2016), ``no_face``
(2010), ``authority_unavailable`` (2017). Codes from Tencent's return-code list for mini-program face sessions.

``POST /_sandbox/next {"outcome", "count"?, "seconds"?}`` queues overrides, consumed in order: ``pass``,
``mismatch`` and ``authority_unavailable`` by the next name + ID check (``"0"``/``"-1"``/``"-6"``) or face
completion; ``liveness_failed`` and ``no_face`` by the next face completion; ``timeout`` by the next FaceID API
call of any kind: held ``seconds`` and then answered, or, without ``seconds``, an HTTP 504 at once.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minigate.identity import InvalidIdentity, parse_id_number, parse_name
from minigate.simulators._core import BEIJING, json_response, read_json_object
from minigate.simulators._identity import Authority, Override, decode_base64, param_error
from minigate.simulators.tencentcloud import ApiAction, Call, HttpFault, Tc3Gateway, TcApiError, _int, _str, invalid

__all__ = ["FACEID_VERSION", "FaceIdDesk", "rule_id_for"]

FACEID_VERSION = "2018-03-01"
SESSION_TTL_SECONDS = 7200
RESULT_TTL_SECONDS = 3 * 24 * 3600
IMAGE_MAX_CHARS = 3 * 1024 * 1024
EXTRA_MAX = 1024
NAME_MAX = 32
NEXT_OUTCOMES = ("pass", "liveness_failed", "mismatch", "no_face", "timeout", "authority_unavailable")
_ID_OVERRIDES = frozenset({"pass", "mismatch", "authority_unavailable"})
_FACE_OVERRIDES = frozenset({"pass", "liveness_failed", "mismatch", "no_face", "authority_unavailable"})
COMPLETE_OUTCOMES = ("pass", "liveness_failed", "mismatch", "low_similarity", "no_face", "authority_unavailable")

ID_DESCRIPTIONS = {
    "0": "姓名和身份证号一致", "-1": "姓名和身份证号不一致", "-2": "非法身份证号（长度、校验位等不正确）",
    "-3": "非法姓名（长度、格式等不正确）", "-4": "证件库服务异常", "-5": "证件库中无此身份证记录",
    "-6": "权威比对系统升级中，请稍后再试", "-7": "认证次数超过当日限制",
}

#: completion outcome -> (ErrCode, message, LiveStatus, Comparestatus)
FACE_CODES: Mapping[str, tuple[int, str, int | None, int | None]] = {
    "pass": (0, "成功", 0, 0),
    "liveness_failed": (1002, "疑似非真人录制", 1002, None),
    "mismatch": (2015, "无法判断为同一人，请确认身份后重试（比对失败）", 0, 2015),
    "name_mismatch": (2006, "姓名和身份证号不匹配，请核实身份后重试", 0, 2006),
    "low_similarity": (2016, "无法判断为同一人，请确认身份后重试（相似度未达到通过阈值）", 0, 2016),
    "no_face": (2010, "脸部未完整露出，请保持正脸面对屏幕", 0, 2010),
    "authority_unavailable": (2017, "权威数据源升级中，请稍后再试", 0, 2017),
}
PENDING_CODE, PENDING_MESSAGE = 17, "本次流程未完成"

TEXT_FIELDS = ("ErrCode", "ErrMsg", "IdCard", "UseIDType", "Name", "OcrNation", "OcrAddress", "OcrBirth",
               "OcrAuthority", "OcrValidDate", "OcrName", "OcrIdCard", "OcrGender", "IdInfoFrom", "LiveStatus",
               "LiveMsg", "Comparestatus", "Comparemsg", "Sim", "Location", "Extra", "LivenessDetail",
               "LivenessInfoTag", "Mobile", "CompareLibType", "LivenessMode", "NFCRequestIds", "NFCBillingCounts",
               "PassNo", "VisaNum", "LivenessActionSequence")
_INFO_TYPE = re.compile(r"^[0-6]{1,7}$")


def rule_id_for(secret_id: str) -> str:
    """A stable RuleId for accounts created before FaceID existed in the sandbox (derived, so every process
    serving the same state dir agrees)."""
    return str(1 + int(hashlib.sha256(secret_id.encode()).hexdigest()[:8], 16) % 99)


@dataclass
class Session:
    token: str
    created_at: float
    name: str
    id_number: str
    extra: str
    image: bytes | None
    outcome: str | None = None
    completed_at: float | None = None
    text: dict[str, Any] = field(default_factory=dict)
    best_frame: str | None = None


def _valid_id(raw: str) -> str | None:
    """The 18-character ID, or None when Tencent would refuse it (lower-case x, 15 digits, GB 11643)."""
    if not re.fullmatch(r"\d{17}[\dX]", raw):
        return None
    try:
        return parse_id_number(raw).value
    except InvalidIdentity:
        return None


def _valid_name(raw: str) -> bool:
    try:
        return len(raw) <= NAME_MAX and parse_name(raw) == raw
    except InvalidIdentity:
        return False


def _score(photo: bytes, *, same: bool) -> str:
    h = int.from_bytes(hashlib.sha256(photo).digest()[:4], "big")
    return f"{90 + (h % 1000) / 100:.2f}" if same else f"{(h % 4000) / 100:.2f}"


class FaceIdDesk:
    """The FaceID side of one simulated account: the authority's records, the sessions, the override queue."""

    def __init__(self, *, account: Mapping[str, Any], now: Callable[[], float]) -> None:
        self.account = account
        self.now = now
        self.authority = Authority(NEXT_OUTCOMES)
        self.sessions: dict[str, Session] = {}
        #: IdCardVerification calls per ID number per Beijing day before ``"-7"``
        self.id_checks_per_day = 50
        self._checks: dict[tuple[str, str], int] = {}

    @property
    def rule_id(self) -> str:
        return str(self.account["faceid_rule_id"])

    def register(self, gateway: Tc3Gateway) -> None:
        def faceid(name: str, handler: Callable[[Call], Any], params: tuple[str, ...]) -> ApiAction:
            return ApiAction("faceid", name, FACEID_VERSION, handler, params=frozenset(params))

        for action in (
            faceid("IdCardVerification", self.id_card_verification, ("IdCard", "Name", "Encryption")),
            faceid("DetectAuth", self.detect_auth,
                   ("RuleId", "TerminalType", "IdCard", "Name", "RedirectUrl", "Extra", "ImageBase64", "Encryption",
                    "IntentionVerifyText", "IntentionQuestions", "IntentionActions", "Config")),
            faceid("GetDetectInfoEnhanced", self.get_detect_info_enhanced,
                   ("BizToken", "RuleId", "InfoType", "BestFramesCount", "IsCutIdCardImage", "IsNeedIdCardAvatar",
                    "IsEncrypt", "Encryption", "IsEncryptResponse", "IsReturnAllVideo")),
            faceid("GetDetectInfo", self.get_detect_info, ("BizToken", "RuleId", "InfoType")),
        ):
            gateway.register(action)

    def routes(self) -> list[Route]:
        return [*self.authority.routes(),
                Route("/_sandbox/faceid/complete", self._complete, methods=["POST"]),
                Route("/_sandbox/faceid/sessions/{token}", self._session, methods=["GET"])]

    # ------------------------------------------------------------------ overrides
    def _take(self, kinds: frozenset[str]) -> Override | None:
        return self.authority.take(kinds.__contains__)

    async def _maybe_timeout(self) -> None:
        taken = self._take(frozenset({"timeout"}))
        if taken is None:
            return
        if taken.seconds is None:
            raise HttpFault(504)
        await asyncio.sleep(taken.seconds)

    # ------------------------------------------------------------------ actions
    @staticmethod
    def _no_encryption(params: Mapping[str, Any], *names: str) -> None:
        for name in names:
            if params.get(name) not in (None, False, ""):
                raise TcApiError("UnsupportedOperation", f"The sandbox does not support `{name}`.")

    def _check_rule(self, params: Mapping[str, Any]) -> None:
        if _str(params, "RuleId", required=True) != self.rule_id:
            raise TcApiError("InvalidParameterValue.RuleIdNotExist", "RuleId不存在，请到人脸核身控制台申请。")

    async def id_card_verification(self, call: Call) -> dict[str, Any]:
        p = call.params
        raw_id = _str(p, "IdCard", required=True) or ""
        name = _str(p, "Name", required=True) or ""
        self._no_encryption(p, "Encryption")
        await self._maybe_timeout()
        id_number = _valid_id(raw_id)
        if id_number is None:
            return self._id_result("-2")
        if not _valid_name(name):
            return self._id_result("-3")
        day = dt.datetime.fromtimestamp(self.now(), BEIJING).date().isoformat()
        key = (id_number, day)
        self._checks[key] = self._checks.get(key, 0) + 1
        if self._checks[key] > self.id_checks_per_day:
            return self._id_result("-7")
        override = self._take(_ID_OVERRIDES)
        if override is not None:
            return self._id_result({"pass": "0", "mismatch": "-1", "authority_unavailable": "-6"}[override.outcome])
        person = self.authority.persons.get(id_number)
        if person is None:
            return self._id_result("-5")
        return self._id_result("0" if person.name == name else "-1")

    @staticmethod
    def _id_result(result: str) -> dict[str, Any]:
        return {"Result": result, "Description": ID_DESCRIPTIONS[result]}

    async def detect_auth(self, call: Call) -> dict[str, Any]:
        p = call.params
        self._check_rule(p)
        self._no_encryption(p, "Encryption")
        raw_id = _str(p, "IdCard", required=True) or ""
        name = _str(p, "Name", required=True) or ""
        extra = _str(p, "Extra") or ""
        redirect = _str(p, "RedirectUrl") or ""
        _str(p, "TerminalType")
        image_text = _str(p, "ImageBase64")
        await self._maybe_timeout()
        id_number = _valid_id(raw_id)
        if id_number is None:
            raise TcApiError("FailedOperation.IdFormatError", "输入的身份证号有误。")
        if not _valid_name(name):
            raise TcApiError("FailedOperation.NameFormatError", "输入的姓名有误。")
        if len(extra) > EXTRA_MAX:
            raise TcApiError("InvalidParameterValue", f"Extra 长度不能超过{EXTRA_MAX}位。")
        if len(redirect) > EXTRA_MAX:
            raise TcApiError("InvalidParameterValue", f"RedirectUrl 长度不能超过{EXTRA_MAX}位。")
        image = None
        if image_text is not None:
            if len(image_text) > IMAGE_MAX_CHARS:
                raise TcApiError("FailedOperation.ImageSizeTooLarge", "图片尺寸过大。")
            image = decode_base64(image_text)
            if image is None:
                raise TcApiError("FailedOperation.ImageDecodeFailed", "图片解码失败。")
        token = str(uuid.uuid4()).upper()
        self.sessions[token] = Session(token, self.now(), name, id_number, extra, image)
        return {"Url": f"{call.base_url.rstrip('/')}/_sandbox/faceid/sessions/{token}", "BizToken": token}

    def _session_for(self, params: Mapping[str, Any]) -> tuple[Session, str]:
        token = _str(params, "BizToken", required=True) or ""
        info_type = _str(params, "InfoType") or "0"
        if not _INFO_TYPE.match(info_type):
            raise invalid("InfoType", "must be digits 0-6")
        self._check_rule(params)
        session = self.sessions.get(token)
        if session is None:
            raise TcApiError("InvalidParameterValue.BizTokenIllegal", "BizToken不合法。")
        now = self.now()
        if (session.completed_at is None and now - session.created_at > SESSION_TTL_SECONDS) or (
                now - session.created_at > RESULT_TTL_SECONDS):
            raise TcApiError("InvalidParameterValue.BizTokenExpired", "BizToken过期。")
        return session, info_type

    def _parts(self, session: Session, info_type: str) -> dict[str, Any]:
        everything = "0" in info_type
        parts: dict[str, Any] = {"Text": None, "IdCardData": None, "BestFrame": None, "VideoData": None}
        if everything or "1" in info_type:
            parts["Text"] = session.text if session.completed_at is not None else self._pending_text(session)
        if everything or "2" in info_type:
            parts["IdCardData"] = {"OcrFront": None, "OcrBack": None}
        if (everything or "3" in info_type) and session.best_frame is not None:
            parts["BestFrame"] = {"BestFrame": session.best_frame}
        if everything or "4" in info_type:
            parts["VideoData"] = {"LivenessVideo": None}
        return parts

    async def get_detect_info_enhanced(self, call: Call) -> dict[str, Any]:
        p = call.params
        for name in ("BestFramesCount",):
            _int(p, name)
        self._no_encryption(p, "IsEncrypt", "Encryption", "IsEncryptResponse")
        session, info_type = self._session_for(p)
        await self._maybe_timeout()
        return self._parts(session, info_type)

    async def get_detect_info(self, call: Call) -> dict[str, Any]:
        session, info_type = self._session_for(call.params)
        await self._maybe_timeout()
        return {"DetectInfo": json.dumps(self._parts(session, info_type), ensure_ascii=False)}

    # ------------------------------------------------------------------ results
    @staticmethod
    def _pending_text(session: Session) -> dict[str, Any]:
        text: dict[str, Any] = dict.fromkeys(TEXT_FIELDS)
        text |= {"ErrCode": PENDING_CODE, "ErrMsg": PENDING_MESSAGE, "Extra": session.extra}
        return text

    @staticmethod
    def _text(session: Session, outcome: str, sim: str | None, at: float) -> dict[str, Any]:
        code, message, live, compare = FACE_CODES[outcome]
        live_msg = None if live is None else ("成功" if live == 0 else message)
        compare_msg = None if compare is None else ("成功" if compare == 0 else message)
        detail = {"ReqTime": str(int(at * 1000)), "Seq": str(uuid.uuid4()), "Idcard": session.id_number,
                  "Name": session.name, "Sim": sim, "IsNeedCharge": code in (0, 1002, 2006, 2015, 2016),
                  "Errcode": code, "Errmsg": message, "Livestatus": live, "Livemsg": live_msg,
                  "Comparestatus": compare, "Comparemsg": compare_msg, "CompareLibType": "权威库", "LivenessMode": 3}
        text: dict[str, Any] = dict.fromkeys(TEXT_FIELDS)
        text |= {"ErrCode": code, "ErrMsg": message, "IdCard": session.id_number, "UseIDType": 0,
                 "Name": session.name, "IdInfoFrom": "其他", "LiveStatus": live, "LiveMsg": live_msg,
                 "Comparestatus": compare, "Comparemsg": compare_msg, "Sim": sim, "Extra": session.extra,
                 "LivenessDetail": [detail], "CompareLibType": "权威库", "LivenessMode": 3}
        return text

    def complete(self, session: Session, outcome: str | None, photo: bytes | None) -> str:
        """The user finishes the flow; returns the outcome label."""
        if outcome is None:
            override = self._take(_FACE_OVERRIDES)
            outcome = override.outcome if override is not None else None
        sim: str | None = None
        if outcome is None:
            person = self.authority.persons.get(session.id_number)
            reference = session.image or (person.photo if person else None)
            if person is None or person.name != session.name:
                outcome = "name_mismatch"
            elif photo is not None and photo.startswith(b"NOFACE"):
                outcome = "no_face"
            elif photo is not None and reference is not None:
                outcome = "pass" if photo == reference else "low_similarity"
                sim = _score(photo, same=outcome == "pass")
            else:
                outcome = "pass"
        if sim is None and outcome in ("pass", "mismatch", "low_similarity"):
            seed = photo or session.token.encode()
            sim = _score(seed, same=outcome == "pass")
        at = self.now()
        session.outcome, session.completed_at = outcome, at
        session.text = self._text(session, outcome, sim, at)
        if photo is not None:
            session.best_frame = base64.b64encode(photo).decode()
        return "mismatch" if outcome == "name_mismatch" else outcome

    # ------------------------------------------------------------------ control routes
    async def _complete(self, request: Request) -> Response:
        body = await read_json_object(request)
        if body is None:
            return param_error("body must be a JSON object")
        token, outcome, photo_text = body.get("biz_token"), body.get("outcome"), body.get("photo")
        if not isinstance(token, str) or not token:
            return param_error("biz_token is required")
        if outcome is not None and outcome not in COMPLETE_OUTCOMES:
            return param_error(f"outcome must be one of {', '.join(COMPLETE_OUTCOMES)}")
        photo = None
        if photo_text is not None:
            photo = decode_base64(photo_text)
            if photo is None:
                return param_error("photo must be base64")
        session = self.sessions.get(token)
        if session is None:
            return json_response({"code": "NOT_FOUND", "message": "no such BizToken"}, 404)
        if session.completed_at is not None:
            return json_response({"code": "ALREADY_COMPLETED", "message": "本次校验已完成"}, 409)
        if self.now() - session.created_at > SESSION_TTL_SECONDS:
            return json_response({"code": "EXPIRED", "message": "Token 过期"}, 410)
        label = self.complete(session, outcome, photo)
        return json_response({"biz_token": token, "outcome": label, "err_code": session.text["ErrCode"]})

    async def _session(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["token"])
        if session is None:
            return json_response({"code": "NOT_FOUND", "message": "no such BizToken"}, 404)
        now = self.now()
        if session.completed_at is not None:
            state = "completed"
        elif now - session.created_at > SESSION_TTL_SECONDS:
            state = "expired"
        else:
            state = "pending"
        return json_response({"biz_token": session.token, "state": state, "created_at": int(session.created_at),
                              "expires_at": int(session.created_at + SESSION_TTL_SECONDS),
                              "err_code": session.text.get("ErrCode") if session.text else None})
