"""A run's cities and regions named in the page's language: in Chinese as the data writes them,
in English from the scenario's ids (``sim/run_places.py`` reads both from the run), so an
English page shows "Shanghai City" where the records say 上海 市区; in a run of several cities
every region carries its city's name, the first city's too."""

from __future__ import annotations

import re

from dashboard import i18n
from sim import api


def city_name(city: api.RunCity, lang: str) -> str:
    """A city's name: its Chinese name, or in English its id in words ("shanghai": Shanghai)."""
    return city.zh if lang == "zh" else i18n.place_name(city.key)


def region_names(meta: dict, lang: str) -> dict[str, str]:
    """Every region of the run, keyed as the run's queries key it, → its name in ``lang``: in a
    run of one city by its own name ("市区" / "City"), in a run of several after its city's,
    every city's alike ("南通 海安" / "Nantong Haian" beside "无锡 市区" / "Wuxi City").

    Only the name changes: the queries key the first city's regions without a prefix (a
    one-city run reads as it always has), the others after their city's Chinese name."""
    several = len(api.run_cities(meta)) > 1
    names = {}
    for region in api.run_regions(meta):
        own = region.zh if lang == "zh" else i18n.place_name(region.id)
        names[region.key] = f"{city_name(region.city, lang)} {own}" if several else own
    return names


def region_label(meta: dict, lang: str):
    """A function from a query's region key to its name in ``lang`` (an unknown key as it is:
    a region of a run written before its settings were kept)."""
    names = region_names(meta, lang)
    return lambda key: names.get(key, key)


def english_names(meta: dict) -> dict[str, str]:
    """Every Chinese place name of the run → its English name (the scenario's ids in words):
    its cities, their regions and the cities they list as interoperable. What the outlets'
    and institutions' English names (``dashboard.names``) take as ``known``, so a name that
    holds a place says it as the pages' region and city columns do."""
    found: dict[str, str] = {}
    for city in api.run_cities(meta):
        found.setdefault(city.zh, i18n.place_name(city.key))
    for region in api.run_regions(meta):
        found.setdefault(region.zh, i18n.place_name(region.id))
    for other in api.run_other_cities(meta):
        found.setdefault(other.zh, i18n.place_name(other.key))
    return {zh: en for zh, en in found.items() if _CHINESE.search(zh)}


_CHINESE = re.compile(r"[\u3400-\u9fff]")  # a key that is already pinyin needs no entry


__all__ = ["city_name", "english_names", "region_label", "region_names"]
