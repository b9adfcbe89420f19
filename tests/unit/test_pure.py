"""Pure code: money, the vault, state machines, configuration, ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigate.config import load_settings
from minigate.domain.orders import ORDER_TRANSITIONS, can_transition
from minigate.errors import ConfigurationError
from minigate.money import MAX_AMOUNT_FEN, fen_to_yuan, yuan_to_fen
from minigate.services.ids import new_id, new_out_no
from minigate.vault import Vault, VaultError, WrappedKey, mask


@given(st.integers(min_value=0, max_value=MAX_AMOUNT_FEN))
def test_fen_yuan_round_trip_is_exact(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@pytest.mark.parametrize("bad", ["", "1.234", "-1.00", "1e3", "01.00", "abc", "1,00", " ", "1."])
def test_yuan_parser_rejects_inexact_text(bad: str) -> None:
    with pytest.raises(ValueError):
        yuan_to_fen(bad)


def test_fen_to_yuan_examples() -> None:
    assert fen_to_yuan(1) == "0.01" and fen_to_yuan(100) == "1.00" and fen_to_yuan(8888) == "88.88"
    with pytest.raises(ValueError):
        fen_to_yuan(-1)


def test_vault_seals_opens_and_binds_context() -> None:
    vault = Vault("a-master-key-of-sufficient-length")
    wrapped = vault.new_data_key()
    sealed = vault.seal("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", context="payer")
    assert "oUpF8" not in sealed and sealed.startswith("mg1.")
    assert vault.open(sealed, context="payer") == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    with pytest.raises(VaultError):
        vault.open(sealed, context="webhook-secret")           # moved to another column: refused
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(VaultError):
        vault.open(tampered, context="payer")
    # another process with the same master key unwraps the stored data key
    other = Vault("a-master-key-of-sufficient-length")
    other.load_data_key(WrappedKey(wrapped.key_id, wrapped.wrapped))
    assert other.open(sealed, context="payer") == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    with pytest.raises(VaultError):
        Vault("another-master-key-entirely!!").load_data_key(wrapped)
    assert vault.lookup_hash("x", context="payer") == other.lookup_hash("x", context="payer")
    assert vault.lookup_hash("x", context="payer") != vault.lookup_hash("x", context="phone")


def test_mask() -> None:
    assert mask("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o") == "oUp" + "*" * 21 + "eS6o"
    assert mask("short") == "*****"


def test_order_state_machine_only_moves_forward() -> None:
    assert can_transition("pending", "paid") and can_transition("paid", "refunded")
    for state, targets in ORDER_TRANSITIONS.items():
        for target in targets:
            assert not can_transition(target, state) or (state, target) in {
                ("closed", "paid"), ("partially_refunded", "partially_refunded")}, (state, target)
    assert not can_transition("refunded", "paid") and not can_transition("paid", "pending")
    assert not can_transition("paid", "closed")


def test_live_mode_refuses_default_or_short_secrets() -> None:
    with pytest.raises(ConfigurationError):
        load_settings(mode="live", database_url="postgresql://x/y")
    with pytest.raises(ConfigurationError):
        load_settings(mode="live", database_url="postgresql://x/y", master_key="short")
    with pytest.raises(ConfigurationError):
        load_settings(mode="live", master_key="k" * 40)           # no database
    with pytest.raises(ConfigurationError, match="https"):      # B-6: notify URLs are HTTPS
        load_settings(mode="live", database_url="postgresql://x/y", master_key="k" * 40)
    with pytest.raises(ConfigurationError, match="both"):
        load_settings(tls_cert_file="/tmp/cert.pem")
    ok = load_settings(mode="live", database_url="postgresql://x/y", master_key="k" * 40,
                       public_url="https://pay.example.com")
    assert "k" * 40 not in repr(ok)                                 # secrets mask their repr


def test_settings_from_toml_file_and_env(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "minigate.toml"  # type: ignore[operator]
    path.write_text('port = 9100\npublic_url = "https://pay.example.com/"\n')
    monkeypatch.setenv("MINIGATE_CONFIG", str(path))
    monkeypatch.setenv("MINIGATE_PORT", "9200")
    settings = load_settings()
    assert settings.port == 9200                                    # environment wins over the file
    assert settings.public_url == "https://pay.example.com"


def test_ids_are_unique_and_provider_safe() -> None:
    ids = {new_id("ord") for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("ord_") for i in ids)
    outs = {new_out_no("MG") for _ in range(1000)}
    assert len(outs) == 1000
    assert all(6 <= len(o) <= 32 and o.isalnum() for o in outs)


def test_error_body_keeps_its_own_fields_when_details_share_their_names() -> None:
    from minigate.api.errors import error_body, error_details

    details = {"message": "msg_1", "code": "x", "type": "y", "param": "z", "reason": "throttled"}
    body = error_body("api_error", "sms_delivery_failed", "could not send", param=None, **error_details(details))
    assert body == {"error": {"type": "api_error", "code": "sms_delivery_failed", "message": "could not send",
                              "detail_message": "msg_1", "detail_code": "x", "detail_type": "y",
                              "detail_param": "z", "reason": "throttled"}}
