"""The institutions of a run's clearing (clearing nodes, issuers, acquirers) named in the page's
language, for the tables and charts that would otherwise show their ids (NT_EXCHANGE).

What the run's settings say of each is read by ``sim.api.run_participants``. A name the
scenario gives (``name_zh``: 南通市数据交换中心) is shown as it is in Chinese and in English words
(``dashboard.names``: "Nantong City Data Exchange Centre"); a clearing node named by its city
alone (上海) is called that city's clearing node. An institution without a name (a bus or metro
operator, another city's default card issuer) is named by what it is and the place it serves
(``dashboard/locale/names.yaml``: "Rudong bus operator", 如东公交): derived from the data, not
invented. An id the settings do not know is shown as it is; the pages keep every id beside
its name, so it can still be looked up in the data.
"""

from __future__ import annotations

from collections.abc import Callable

from dashboard import i18n, names, places
from sim import api


def participant_names(meta: dict, lang: str) -> dict[str, str]:
    """Every institution the run's settings name, by id → its name in ``lang``."""
    regions = places.region_names(meta, lang)
    known = places.english_names(meta)
    cities = {c.zh for c in api.run_cities(meta)} | {c.zh for c in api.run_other_cities(meta)}

    def place(where: api.RunCity | api.RunPlace) -> str:
        return where.zh if lang == "zh" else i18n.place_name(where.key)

    out = {}
    for pid, p in api.run_participants(meta).items():
        if p.zh and p.role == "clearing_node" and p.zh in cities:
            shown = i18n.t("names.clearing_node", lang, place=p.zh if lang == "zh" else known[p.zh])
        elif p.zh:
            shown = p.zh if lang == "zh" else names.english(p.zh, known)
        elif p.region is not None:
            shown = i18n.t(f"names.{p.kind}", lang, place=regions.get(p.region.key, p.region.key))
        elif p.place is not None:
            shown = i18n.t(f"names.{p.kind}", lang, place=place(p.place))
        else:
            shown = pid
        out[pid] = shown
    return out


def participant_label(meta: dict, lang: str) -> Callable[[str], str]:
    """A function from a participant id to its name in ``lang`` (an unknown id as it is)."""
    found = participant_names(meta, lang)
    return lambda pid: found.get(str(pid), str(pid))


__all__ = ["participant_label", "participant_names"]
