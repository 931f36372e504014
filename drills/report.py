"""A drill's debrief as one HTML page, in Chinese or in English (drills/debrief.py makes the
content). Self-contained (the style inline, no script, no network); numbers and money
formatted for the language by Babel; the same debrief gives the same bytes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from babel.numbers import format_decimal

from sim.html_page import esc

WORDS = {
    "title": {"en": "Drill debrief", "zh": "演练复盘"},
    "trainee": {"en": "Trainee", "zh": "学员"},
    "role": {"en": "Role", "zh": "角色"},
    "day": {"en": "Day", "zh": "日期"},
    "score": {"en": "Score", "zh": "得分"},
    "tasks": {"en": "Tasks", "zh": "任务"},
    "task": {"en": "Task", "zh": "任务"},
    "points": {"en": "Points", "zh": "分数"},
    "detail": {"en": "Detail", "zh": "说明"},
    "incidents": {"en": "Incidents and the response", "zh": "事件与处置"},
    "incident": {"en": "Incident", "zh": "事件"},
    "window": {"en": "When", "zh": "时间"},
    "touched": {"en": "What it touched", "zh": "影响范围"},
    "detect": {"en": "Minutes to detect", "zh": "发现用时（分钟）"},
    "act": {"en": "Minutes to act", "zh": "处置用时（分钟）"},
    "never": {"en": "never", "zh": "未处置"},
    "diagnosis": {"en": "Diagnosis", "zh": "诊断"},
    "found": {"en": "found", "zh": "找到"},
    "missed": {"en": "missed", "zh": "遗漏"},
    "wrongly_accused": {"en": "wrongly accused", "zh": "误判"},
    "money": {"en": "Money: the actions against doing nothing", "zh": "资金影响：处置与不处置对比"},
    "measure": {"en": "Measure", "zh": "指标"},
    "with": {"en": "With the actions", "zh": "处置后"},
    "without": {"en": "Doing nothing", "zh": "不处置"},
    "difference": {"en": "Difference", "zh": "差额"},
    "timeline": {"en": "Timeline", "zh": "时间线"},
    "time": {"en": "Time", "zh": "时间"},
    "what": {"en": "What", "zh": "内容"},
    "alert": {"en": "alert", "zh": "告警"},
    "true": {"en": "true", "zh": "真实"},
    "noise": {"en": "noise", "zh": "误报"},
    "action": {"en": "action", "zh": "操作"},
    "starts": {"en": "starts", "zh": "开始"},
    "ends": {"en": "ends", "zh": "结束"},
    "devices": {"en": "devices", "zh": "设备"},
    "cards": {"en": "cards", "zh": "卡"},
    "records": {"en": "records", "zh": "记录"},
    "alerts_count": {"en": "Alerts: {t} true, {n} noise", "zh": "告警：真实 {t} 条，误报 {n} 条"},
    "stopped_at": {"en": "stopped at", "zh": "止损时间"},
    "given": {"en": "given", "zh": "学员回答"},
    "answer": {"en": "answer", "zh": "正确答案"},
    "named": {"en": "named", "zh": "学员指认"},
}
MEASURES = {
    "duplicate_charges_fen": {"en": "Duplicate charges (yuan)", "zh": "重复扣款（元）"},
    "fen_hours_waiting_upload": {
        "en": "Money waiting for upload (yuan-hours)",
        "zh": "待上传资金（元·小时）",
    },
    "card_fares_cleared_fen": {"en": "Card fares cleared (yuan)", "zh": "已清分卡费（元）"},
    "tap_records": {"en": "Tap records", "zh": "交易记录数"},
    "outlet_mean_wait_min": {"en": "Mean outlet wait (min)", "zh": "网点平均等待（分钟）"},
    "outlet_visitors_turned_away": {
        "en": "Outlet visitors turned away at closing",
        "zh": "网点关门时未办理而离开的人数",
    },
    "refused_taps": {"en": "Taps refused at readers", "zh": "读卡器拒绝的刷卡/扫码次数"},
    "double_charges_unrefunded_fen": {
        "en": "Double charges the clearing let through, not refunded (yuan)",
        "zh": "清分未拦截且未退款的重复扣款（元）",
    },
    "fare_fen_days_cleared_late": {
        "en": "Fares cleared days late (yuan-days)",
        "zh": "延迟清分的交易资金（元·天）",
    },
    "settlement_fen_days_deferred": {
        "en": "Settlements deferred for deposit money (yuan-days)",
        "zh": "因备付金不足延迟的结算（元·天）",
    },
}
ROLES = {
    "operations": {"en": "operations", "zh": "运营监控"},
    "clearing": {"en": "clearing", "zh": "清分结算"},
    "service_desk": {"en": "service desk", "zh": "客服"},
}
#: What an incident kind's target is: the scope it names (a device, a line, an outlet, ...).
_TARGET_SCOPES = {
    "validator_outage": "device",
    "duplicate_wave": "device",
    "line_outage": "line",
    "offline_acceptance": "line",
    "free_rides": "line",
    "station_outage": "station",
    "clearing_node_outage": "node",
    "qr_platform_outage": "medium",
    "outlet_closure": "outlet",
    "renewal_wave": "outlet",
    "outlet_extension": "outlet",
    "deposit_call_unpaid": "issuer",
}
#: What an action's target is, by the action's kind (``identify``, ``explain``: free words).
ACTION_TARGET_SCOPES = {
    "extend_outlet_hours": "outlet",
    "restore_node": "node",
    "chase_deposit": "issuer",
}


class Names(Protocol):
    """How the pages word what a debrief names (``dashboard.drill_names.DrillNames``), so the
    debrief on the page reads as the pages' tables do."""

    def label(self, per: str, key: object) -> str:
        """A thing of scope ``per`` (device, line, outlet, node, issuer, ...) by its id: its
        name with the id beside."""
        ...

    def named(self, text: str) -> str:
        """Words a trainee typed to name a cause (an ``identify`` action), with what they
        name."""
        ...


def target_scope(kind: str, target: str) -> str | None:
    """The scope an incident's ``target`` names (sim/incidents.py): ``device``, ``line``,
    ``station``, ``node``, ``medium``, ``outlet`` or ``issuer``; None for a kind with none. A
    ``comm_outage`` names a device (a number) or a line."""
    if kind == "comm_outage":
        return "device" if str(target).isdigit() else "line"
    return _TARGET_SCOPES.get(kind)


_CSS = """
body { font-family: "Noto Sans CJK SC", "WenQuanYi Micro Hei", "PingFang SC", sans-serif;
       margin: 2em auto; max-width: 1000px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.noise td { color: #888; }
.score { font-size: 2em; font-weight: bold; }
"""


def _w(key: str, lang: str) -> str:
    return WORDS[key][lang]


def _num(value, lang: str, digits: int = 0) -> str:
    locale = "zh_CN" if lang == "zh" else "en_US"
    pattern = "#,##0" if digits == 0 else "#,##0." + "0" * digits
    return format_decimal(value, format=pattern, locale=locale)


def _money(key: str, value: float, lang: str) -> str:
    if "fen" in key:  # fen, fen-hours, fen-days: shown in yuan
        return _num(value / 100, lang, 2)
    return _num(value, lang, 2 if isinstance(value, float) else 0)


def _listed(value, shown: Callable[[object], str] = str) -> str:
    """A value for a table cell (each item as ``shown`` words it); a long list as its count
    and first few."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_listed(v, shown)}" for k, v in value.items())
    if not isinstance(value, list):
        return shown(value)
    if len(value) > 6:
        return f"{len(value)} ({', '.join(map(shown, value[:3]))}, …)"
    return ", ".join(map(shown, value)) or "-"


def _by_scope(names: Names | None, scope: str | None) -> Callable[[object], str]:
    """A function wording an id of ``scope`` (``names``' words; the id without names)."""
    if names is None or scope is None:
        return str
    return lambda value: names.label(scope, str(value))


def _typed(names: Names | None) -> Callable[[object], str]:
    """A function wording what a trainee typed to name a cause (``names.named``; as typed
    without names)."""
    if names is None:
        return str
    return lambda value: names.named(str(value))


#: An action's fields that name things of a scope (the action's target: ACTION_TARGET_SCOPES).
_ACTION_FIELD_SCOPES = {"devices": "device", "lines": "line"}
#: The tasks whose answer is a thing the trainee names (an ``identify`` action's words).
_NAMING_TASKS = ("find_node", "find_medium", "find_outlet", "find_issuer")


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _when(stamp: str, day: str) -> str:
    """``HH:MM`` of an ISO time on the drill's ``day``; ``MM-DD HH:MM`` on another day (an
    outage that began the night before)."""
    return stamp[11:16] if stamp[:10] == day else f"{stamp[5:10]} {stamp[11:16]}"


def _minute_of(stamp: str, day: str) -> int:
    """Minutes from the drill day's midnight to an ISO time (negative the day before)."""
    at = dt.datetime.fromisoformat(stamp[:16])
    return int((at - dt.datetime.fromisoformat(day)).total_seconds() // 60)


def debrief_html(debrief: dict, lang: str = "zh", names: Names | None = None) -> str:
    """The page (module docstring); ``lang`` is ``zh`` or ``en``. ``names`` words the devices,
    lines, outlets, nodes and issuers the tasks, incidents, alerts and actions name, and what a
    trainee typed to name a cause, as the drill pages do (the dashboard's names, with the id
    beside); without it they are shown by their ids and as typed."""
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be zh or en, got {lang!r}")
    d = debrief
    parts = [
        f"<h1>{esc(_w('title', lang))}: {esc(d['title'][lang])}</h1>",
        "<table>",
        f"<tr><th>{esc(_w('trainee', lang))}</th><td>{esc(d['trainee'])}</td>"
        f"<th>{esc(_w('role', lang))}</th><td>{esc(ROLES[d['role']][lang])}</td>"
        f"<th>{esc(_w('day', lang))}</th><td>{esc(d['day'])}</td></tr>",
        "</table>",
        f'<p class="score">{esc(_w("score", lang))}: {_num(d["score"], lang, 1)} / '
        f"{_num(d['of'], lang)}</p>",
        f"<h2>{esc(_w('tasks', lang))}</h2><table><tr><th>{esc(_w('task', lang))}</th>"
        f"<th>{esc(_w('points', lang))}</th><th>{esc(_w('detail', lang))}</th></tr>",
    ]
    for t in d["tasks"]:
        detail = {
            k: v for k, v in t.items() if k not in ("task", "kind", "incident", "points", "of")
        }
        words = "; ".join(
            f"{_w(k, lang) if k in WORDS else k}: {_listed(v, _task_value(t, k, d, names))}"
            for k, v in detail.items()
        )
        parts.append(
            f"<tr><td>{esc(t['task'])} ({esc(t['kind'])})</td>"
            f'<td class="num">{_num(t["points"], lang, 1)} / {_num(t["of"], lang)}</td>'
            f"<td>{esc(words)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        f"<h2>{esc(_w('incidents', lang))}</h2><table><tr><th>{esc(_w('incident', lang))}</th>"
        f"<th>{esc(_w('window', lang))}</th><th>{esc(_w('touched', lang))}</th>"
        f"<th>{esc(_w('detect', lang))}</th><th>{esc(_w('act', lang))}</th></tr>"
    )
    for inc_id, t in d["incidents"].items():
        timing = d["detection"][inc_id]
        target = _by_scope(names, target_scope(t["kind"], t["target"]))(t["target"])
        touched = (
            f"{_num(len(t['devices']), lang)} {_w('devices', lang)}, "
            f"{_num(len(t['cards']), lang)} {_w('cards', lang)}, "
            f"{_num(t['records'], lang)} {_w('records', lang)}, "
            f"¥{_num(t['fen'] / 100, lang, 2)}"
        )
        detect, act = timing["minutes_to_detect"], timing["minutes_to_act"]
        parts.append(
            f"<tr><td>{esc(inc_id)} ({esc(t['kind'])}, {esc(target)})</td>"
            f"<td>{esc(_when(t['start'], d['day']))}–{esc(_when(t['end'], d['day']))}</td>"
            f"<td>{esc(touched)}</td>"
            f'<td class="num">{esc(_w("never", lang) if detect is None else _num(detect, lang))}'
            f'</td><td class="num">{esc(_w("never", lang) if act is None else _num(act, lang))}'
            "</td></tr>"
        )
    parts.append("</table>")
    money = d["money"]
    parts.append(
        f"<h2>{esc(_w('money', lang))}</h2><table><tr><th>{esc(_w('measure', lang))}</th>"
        f"<th>{esc(_w('with', lang))}</th><th>{esc(_w('without', lang))}</th>"
        f"<th>{esc(_w('difference', lang))}</th></tr>"
    )
    for key, label in MEASURES.items():
        cells = [money[side][key] for side in ("with_actions", "doing_nothing", "difference")]
        parts.append(
            f"<tr><td>{esc(label[lang])}</td>"
            + "".join(f'<td class="num">{esc(_money(key, v, lang))}</td>' for v in cells)
            + "</tr>"
        )
    parts.append("</table>")
    count = _w("alerts_count", lang).format(t=d["alerts_true"], n=d["alerts_noise"])
    parts.append(f"<h2>{esc(_w('timeline', lang))}</h2><p>{esc(count)}</p>")
    parts.append(
        f"<table><tr><th>{esc(_w('time', lang))}</th><th>{esc(_w('what', lang))}</th></tr>"
    )
    for minute, kind, text in _timeline(d, lang, names):
        css = ' class="noise"' if kind == "noise" else ""
        at = _clock(minute) if 0 <= minute < 24 * 60 else _when(_stamp(d["day"], minute), "")
        parts.append(f"<tr{css}><td>{esc(at)}</td><td>{esc(text)}</td></tr>")
    parts.append("</table>")
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (
        f'<!DOCTYPE html>\n<html lang="{html_lang}">\n<head><meta charset="utf-8">'
        f"<title>{esc(_w('title', lang))}: {esc(d['title'][lang])}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def _stamp(day: str, minute: int) -> str:
    """The ISO time ``minute`` minutes after the drill day's midnight."""
    return (dt.datetime.fromisoformat(day) + dt.timedelta(minutes=minute)).isoformat()


def _task_value(task: dict, field: str, d: dict, names: Names | None) -> Callable[[object], str]:
    """How a task's detail ``field`` words its values: the devices a ``find_devices`` found,
    missed or wrongly accused by name; what the trainee typed to name a node, QR platform,
    outlet or issuer as the actions are worded, and the answer by name; the rest (cards,
    causes, times) as they are."""
    kind = task.get("kind")
    if kind == "find_devices" and field in ("found", "missed", "wrongly_accused"):
        return _by_scope(names, "device")
    if kind in _NAMING_TASKS and field == "named":
        return _typed(names)
    if kind in _NAMING_TASKS and field == "answer":
        incident = d["incidents"].get(task.get("incident"), {})
        return lambda value: _by_scope(names, target_scope(incident.get("kind", ""), value))(value)
    return str


def _action_words(a: dict, names: Names | None) -> str:
    """An action's fields in words: the devices, lines and the target of its kind's scope by
    name, an ``identify``'s words as the pages word them (``Names.named``), the device of a
    refund's ``duplicates_on`` by name; without ``names``, every id as it is."""
    scopes = {**_ACTION_FIELD_SCOPES, "target": ACTION_TARGET_SCOPES.get(a["kind"])}
    parts = []
    for k, v in a.items():
        if k in ("at", "kind") or not v:
            continue
        if k == "duplicates_on" and isinstance(v, dict) and "device" in v:
            v = {**v, "device": _by_scope(names, "device")(v["device"])}
            shown: Callable[[object], str] = str
        elif k == "target" and a["kind"] == "identify":
            shown = _typed(names)
        else:
            shown = _by_scope(names, scopes.get(k))
        parts.append(f"{k} {_listed(v, shown)}")
    return "; ".join(parts)


def _timeline(d: dict, lang: str, names: Names | None = None) -> list[tuple[int, str, str]]:
    """(minute of the day, kind, words) of incidents, alerts and actions, in time order
    (``names``: as for ``debrief_html``)."""
    rows = []
    for inc_id, t in d["incidents"].items():
        start = _minute_of(t["start"], d["day"])
        rows.append((start, "incident", f"{_w('incident', lang)} {inc_id} {_w('starts', lang)}"))
        end = _minute_of(t["end"], d["day"])
        if end < 24 * 60:
            rows.append((end, "incident", f"{_w('incident', lang)} {inc_id} {_w('ends', lang)}"))
    for a in d["alerts"]:
        tag = _w("true", lang) if a["true"] else _w("noise", lang)
        where = f"{a['per']} {a['key']}" if names is None else names.label(a["per"], str(a["key"]))
        rows.append(
            (a["minute"], "alert" if a["true"] else "noise",
             f"{_w('alert', lang)} {a['rule']} ({where}, {tag})")
        )  # fmt: skip
    for a in d["actions"]:
        hh, mm = a["at"][:5].split(":")
        what = _action_words(a, names)
        rows.append(
            (int(hh) * 60 + int(mm), "action", f"{_w('action', lang)} {a['kind']} {what}".strip())
        )
    return sorted(rows, key=lambda r: (r[0], r[1]))


__all__ = ["ACTION_TARGET_SCOPES", "Names", "debrief_html", "target_scope"]
