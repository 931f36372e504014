"""Small integer codes shared by every module.

Hot-path arrays hold these codes (uint8) instead of strings; outputs turn them back into
dictionary-encoded strings. The order of each tuple is part of the data contract: append, never
reorder.
"""

from __future__ import annotations

import numpy as np


class _CodeSet:
    """A set of uint8 codes, tested per element of a column (``of``)."""

    def __init__(self, codes) -> None:
        # A lookup table over every uint8 code: ``table[column]`` is a tenth of
        # ``np.isin(column, codes)``'s time on a day's taps.
        self.table = np.zeros(256, dtype=bool)
        self.table[list(codes)] = True
        self.table.flags.writeable = False
        # Codes forming one run lo..hi are two comparisons on a uint8 column: a twentieth of
        # the table's gather.
        on = np.flatnonzero(self.table)
        one_run = len(on) > 0 and int(on[-1]) - int(on[0]) + 1 == len(on)
        self.run = (int(on[0]), int(on[-1])) if one_run else None

    def of(self, column: np.ndarray) -> np.ndarray:
        """Per element of ``column``, whether its code is in the set."""
        if self.run is not None and isinstance(column, np.ndarray) and column.dtype == np.uint8:
            lo, hi = self.run
            return column <= hi if lo == 0 else (column >= lo) & (column <= hi)
        return self.table[column]


#: Card types issued in Nantong (DOMAIN.md §1, FACTS.md "Population and cards").
CARD_TYPES: tuple[str, ...] = (
    "ordinary",  # 普通卡
    "student",  # 学生卡
    "longevity",  # 长寿卡 (elderly, free rides)
    "love",  # 爱心卡 (elderly discount)
    "preferential",  # 优待卡 (disabled and other special groups)
    "military",  # 拥军卡
    "teacher",  # 尊师卡
    "blood_donor",  # 热血通
)
#: The elderly card types (the published "长寿卡 and 爱心卡" taps), as names and as codes.
ELDERLY_CARD_TYPES: tuple[str, ...] = ("longevity", "love")
ELDERLY_CARD_CODES: tuple[int, ...] = tuple(CARD_TYPES.index(t) for t in ELDERLY_CARD_TYPES)
_ELDERLY = _CodeSet(ELDERLY_CARD_CODES)


def is_elderly(card_type: np.ndarray) -> np.ndarray:
    """Per card (or tap), whether its card type is an elderly one (``ELDERLY_CARD_CODES``)."""
    return _ELDERLY.of(card_type)


CARD_TYPE_ZH: dict[str, str] = {
    "ordinary": "普通卡",
    "student": "学生卡",
    "longevity": "长寿卡",
    "love": "爱心卡",
    "preferential": "优待卡",
    "military": "拥军卡",
    "teacher": "尊师卡",
    "blood_donor": "热血通",
}

#: Fare media. Cards carry a stored-value balance; QR channels are paid by the channel's account.
MEDIA: tuple[str, ...] = (
    "physical_card",  # 实体卡
    "nfc_virtual_card",  # NFC 虚拟卡 (stored value on the phone's secure element)
    "qr_changxing",  # 畅行南通 app ride code
    "qr_alipay",  # 支付宝
    "qr_wechat_tongcheng",  # 微信 / 同程
    "qr_unionpay",  # 银联
    "qr_yimatongxing",  # 一码通行 (Shanghai–Nantong interoperable code)
)
MEDIA_ZH: dict[str, str] = {
    "physical_card": "实体卡",
    "nfc_virtual_card": "NFC虚拟卡",
    "qr_changxing": "畅行南通扫码",
    "qr_alipay": "支付宝",
    "qr_wechat_tongcheng": "同程微信",
    "qr_unionpay": "银联",
    "qr_yimatongxing": "一码通行",
}
#: Media codes that hold a stored-value balance on the card (the rest are account/QR based).
STORED_VALUE_MEDIA: frozenset[int] = frozenset({0, 1})


_STORED_VALUE = _CodeSet(STORED_VALUE_MEDIA)


def is_stored_value(medium: np.ndarray) -> np.ndarray:
    """Per tap, whether its medium holds a stored-value balance (``STORED_VALUE_MEDIA``)."""
    return _STORED_VALUE.of(medium)


#: What a rider did after the reader took no fare from the card (declined for balance, or the
#: card not accepted there): did not ride, paid by QR code, or paid cash (outside the system).
FALLBACKS: tuple[str, ...] = ("none", "qr", "cash")
FALLBACK_NONE, FALLBACK_QR, FALLBACK_CASH = 0, 1, 2

#: Who completed an incomplete trip (不完整交易; DOMAIN.md §2): first where it happened (the
#: reader there, at once or at the card's next tap there), else the card's issuer, before the
#: card rides again. Code 0: the tap is not part of an incomplete trip.
INCOMPLETE_PROCESSORS: tuple[str, ...] = ("", "place", "issuer")
INCOMPLETE_AT_PLACE, INCOMPLETE_AT_ISSUER = 1, 2

#: Transit modes.
MODES: tuple[str, ...] = ("bus", "metro")

#: Tap kinds (JT/T 978 trip record type).
TAP_KINDS: tuple[str, ...] = ("single", "entry", "exit")
TAP_SINGLE, TAP_ENTRY, TAP_EXIT = 0, 1, 2


def code_of(table: tuple[str, ...], name: str) -> int:
    """Return the integer code of ``name`` in ``table`` (raises KeyError with the valid names)."""
    try:
        return table.index(name)
    except ValueError:
        raise KeyError(f"{name!r} is not one of {', '.join(table)}") from None


#: Calendar day types (sim/calendar.py decides which one a date is).
DAY_TYPES: tuple[str, ...] = ("workday", "weekend", "holiday", "spring_festival")
WORKDAY, WEEKEND, HOLIDAY, SPRING_FESTIVAL = 0, 1, 2, 3

#: Status of every tap record in clearing: each tap ends in exactly one of these.
TX_STATUS: tuple[str, ...] = ("pending", "cleared", "rejected")
PENDING, CLEARED, REJECTED = 0, 1, 2
