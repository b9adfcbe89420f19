"""The data inventory (C-1): every stored field that holds personal information, its class, purpose,
protection and retention — ``minigate privacy inventory`` prints it; a test fails when a column that looks
like personal data is not declared here.

Classes (C-12): ``sensitive_pi`` (PIPL art. 28: ID numbers, biometrics-derived data, financial accounts),
``pi`` (phone numbers, names, openids, IPs), ``pseudonymous`` (keyed hashes: not reversible without the
master key, still personal data under PIPL because minigate holds that key).

Protection ``sealed (person key)``: sealed under the subject's own key in ``person_keys``; erasing the subject
shreds the key, so every copy of the value (backups included) stops opening. Values written before person keys
existed stay under the shared data key until their record is erased or purged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["INVENTORY", "PERSON_KEYS", "PI_COLUMN_PATTERN", "Field", "inventory", "undeclared_columns"]


@dataclass(frozen=True, slots=True)
class Field:
    table: str
    column: str
    data_class: str           # sensitive_pi | pi | pseudonymous
    purpose: str
    protection: str           # sealed (AES-256-GCM) | keyed hash | masked | raw (said why)
    retention: str


INVENTORY: tuple[Field, ...] = (
    Field("orders", "payer_sealed", "pi", "the payer's openid / open id, sent to the provider to pay",
          "sealed", "with the order (accounting law: 30 years for bookkeeping records)"),
    Field("orders", "payer_hash", "pseudonymous", "find a payer's orders without decrypting", "keyed hash",
          "with the order"),
    Field("orders", "contact_phone_sealed", "pi", "order SMS the app opted in to", "sealed",
          "with the order; removed when the subject is erased (not an accounting record)"),
    Field("orders", "contact_phone_hash", "pseudonymous", "lookups", "keyed hash",
          "with the order; removed when the subject is erased"),
    Field("inbound_notifications", "body", "pi",
          "evidence of what a provider reported (WeChat and JD bodies are encrypted; Alipay's carry the "
          "buyer's id as the provider sends it)", "raw: the signed original is the evidence", "with the order"),
    Field("inbound_notifications", "headers", "pi", "signature evidence of provider callbacks",
          "raw (no personal data beyond the request metadata)", "with the order"),
    Field("sms_messages", "phone_sealed", "pi", "deliver the message, answer status queries",
          "sealed (person key; order notifications: the order's sealed copy)", "with the message; erased with "
          "the subject"),
    Field("sms_messages", "phone_hash", "pseudonymous", "list messages by number", "keyed hash", "with the message"),
    Field("sms_messages", "phone_masked", "pi", "display", "masked (+86138****8000)", "with the message"),
    Field("sms_messages", "params_sealed", "pi", "the template values (verification codes never stored)",
          "sealed (person key)", "with the message; erased with the subject"),
    Field("verification_codes", "phone_hash", "pseudonymous", "bind a code to its number", "keyed hash",
          "with the code"),
    Field("verification_codes", "code_hash", "pseudonymous", "check a code (B-23)", "keyed hash",
          "minutes (code lifetime), row kept for the attempt count"),
    Field("sms_decisions", "phone_hash", "pseudonymous", "anti-abuse evidence (B-24)", "keyed hash",
          "with the decision log"),
    Field("sms_decisions", "ip_hash", "pseudonymous", "anti-abuse evidence", "keyed hash", "with the decision log"),
    Field("sms_decisions", "device_hash", "pseudonymous", "anti-abuse evidence", "keyed hash",
          "with the decision log"),
    Field("consent_records", "subject_hash", "pseudonymous", "consent evidence (C-2, C-3, C-17) for every "
          "purpose: marketing_sms (number), identity_id / identity_biometric (ID number or reference), analytics "
          "(user id)", "keyed hash", "kept as evidence of lawful processing"),
    Field("consent_records", "evidence", "pi", "how consent was given (masked number, page, channel)",
          "masked", "kept as evidence of lawful processing"),
    Field("identity_verifications", "name_sealed", "pi", "the identity check and the subject's export",
          "sealed (person key)", "retention_days (default 30), then purged; erased with the subject"),
    Field("identity_verifications", "id_number_sealed", "sensitive_pi", "the identity check and the subject's "
          "export", "sealed (person key)", "retention_days (default 30), then purged; erased with the subject"),
    Field("identity_verifications", "subject_hash", "pseudonymous", "find a person's verifications (export, "
          "erase)", "keyed hash", "record_retention_days (default 3 years)"),
    Field("identity_verifications", "masked", "pi", "display", "masked (张*, 110***********002X)",
          "record_retention_days"),
    Field("deletion_records", "subject_hash", "pseudonymous", "proof that an erasure happened", "keyed hash",
          "kept as evidence"),
    Field("console_users", "email", "pi", "the sign-in name of a console operator (staff, not end users)",
          "raw: looked up at sign-in", "until the console user is removed"),
    Field("person_keys", "subject_hash", "pseudonymous", "find the data key of one person (app, mode, keyed hash "
          "of the phone number, ID number or reference) to seal, open and shred their data", "keyed hash",
          "until the subject is erased (the row is deleted: crypto-shredding); back up apart from the data"),
)

#: the key table of crypto-shredding: listed by ``minigate privacy inventory`` with the fields above
PERSON_KEYS = {"table": "person_keys", "key": "wrapped",
               "protection": "AES-256 key per (app, mode, subject), sealed by the shared data key (itself wrapped "
                             "by the master key)",
               "erasure": "POST /v1/privacy/subjects/erase deletes the row in the transaction that records it",
               "backups": "keep this table's backups apart from the data's and shorter-lived (or none): a backup "
                          "of a deleted key brings the erased data back"}

#: column names that hold (or may hold) personal data; each such column must be in :data:`INVENTORY`
PI_COLUMN_PATTERN = re.compile(r"(phone|payer|name_sealed|id_number|subject|openid|open_id|ip_hash|device|"
                               r"email|address|contact|audio|image|photo|face|voice|^body$|^evidence$|masked|"
                               r"code_hash)")


def inventory() -> list[dict[str, Any]]:
    return [asdict(field) for field in INVENTORY]


def undeclared_columns(metadata: Any) -> list[str]:
    """``table.column`` of every column that looks personal but is not declared."""
    declared = {(f.table, f.column) for f in INVENTORY}
    found: list[str] = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            if PI_COLUMN_PATTERN.search(column.name) and (table.name, column.name) not in declared:
                found.append(f"{table.name}.{column.name}")
    return found
