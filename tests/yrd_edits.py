"""Edits of a loaded multi-city scenario for tests: what every city of the run sees of one of
them (its ``interop.cities`` entry), changed in place of a file per city."""

from __future__ import annotations


def seen_as(scenario, city_code: str, **fields):
    """``scenario`` with every city's view of the city of ``city_code`` given ``fields``."""
    cities = []
    for city in scenario.city_scenarios:
        ext = {
            cid: e.model_copy(update=fields) if e.city_code == city_code else e
            for cid, e in city.interop.cities.items()
        }
        interop = city.interop.model_copy(update={"cities": ext})
        cities.append(city.model_copy(update={"interop": interop}))
    return scenario.model_copy(update={"city_scenarios": tuple(cities)})
