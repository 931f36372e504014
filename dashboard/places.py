"""A run's cities and regions named in the page's language: in Chinese as the data writes them,
in English from the scenario's ids (``sim/run_places.py`` reads both from the run), so an
English page shows "Shanghai City" where the records say 上海 市区."""

from __future__ import annotations

from dashboard import i18n
from sim import api


def city_name(city: api.RunCity, lang: str) -> str:
    """A city's name: its Chinese name, or in English its id in words ("shanghai": Shanghai)."""
    return city.zh if lang == "zh" else i18n.place_name(city.key)


def region_names(meta: dict, lang: str) -> dict[str, str]:
    """Every region of the run, keyed as the run's queries key it, → its name in ``lang``: the
    first city's regions by their own name, another city's after its city's ("上海 市区" /
    "Shanghai City")."""
    names = {}
    for region in api.run_regions(meta):
        if lang == "zh":
            names[region.key] = region.key
            continue
        own = i18n.place_name(region.id)
        names[region.key] = (
            own if region.city.index == 0 else f"{city_name(region.city, lang)} {own}"
        )
    return names


def region_label(meta: dict, lang: str):
    """A function from a query's region key to its name in ``lang`` (an unknown key as it is:
    a region of a run written before its settings were kept)."""
    names = region_names(meta, lang)
    return lambda key: names.get(key, key)


__all__ = ["city_name", "region_label", "region_names"]
