"""Local identity checks: GB 11643-1999 ID numbers, names, masking, and the provider base's safe reprs."""

from __future__ import annotations

from datetime import date

import pytest

from minigate.identity import InvalidIdentity, check_character, mask_id_number, mask_name, parse_id_number, parse_name
from minigate.providers.bases.identity import FaceImage, PersonId, VoiceSample


@pytest.mark.parametrize(("number", "check"), [("11010519491231002X", "X"), ("440524188001010014", "4")])
def test_published_vectors(number: str, check: str) -> None:
    assert check_character(number[:17]) == check
    parsed = parse_id_number(number)
    assert parsed.value == number and repr(parsed) == f"IdNumber({mask_id_number(number)})"
    assert number not in repr(parsed) and number not in str(parsed)


def test_lower_case_x_and_legacy_15_digit_numbers_normalise() -> None:
    assert parse_id_number("11010519491231002x").value == "11010519491231002X"
    legacy = parse_id_number("440524800101001")          # 15 digits: 19 inserted, check computed
    assert legacy.value == "44052419800101001" + check_character("44052419800101001")
    assert legacy.birth == date(1980, 1, 1) and legacy.male is True


@pytest.mark.parametrize("bad", ["110105194912310021", "99010519491231002X", "11010519491331002X",
                                 "1101051949123100", "11010530001231002X", "abc", "", "1" * 18])
def test_bad_numbers_are_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        parse_id_number(bad, today=date(2026, 11, 26))
    assert info.value.code == "invalid_id_number"


@pytest.mark.parametrize("name", ["张三", "欧阳娜娜", "买买提·艾力", "Li Lei", "O'Neil"])
def test_names(name: str) -> None:
    assert parse_name(f"  {name} ") == name


@pytest.mark.parametrize("bad", ["", "张3", "<script>", "a" * 80, "张" * 40])
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        parse_name(bad)
    assert info.value.code == "invalid_name"


def test_masks_and_reprs_hide_personal_data() -> None:
    assert mask_id_number("11010519491231002X") == "110***********002X"
    assert mask_name("张三") == "张*" and mask_name("欧阳娜娜") == "欧***"
    person = PersonId("张三", "11010519491231002X")
    assert "张三" not in repr(person) and "1101" not in repr(person)
    assert "QUJD" not in repr(FaceImage("QUJDREVG" * 10)) and "QUJD" not in repr(VoiceSample("QUJDREVG" * 10))
