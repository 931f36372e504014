"""Write the city files of the Yangtze River Delta scenario (scenarios/yrd/<city>.yaml).

Every city but Nantong is built the same way from two data files, so its figures can be traced:

- ``data/yrd/cities.csv``: published figures, each with its source in ``data/yrd/SOURCES.md``
  (residents, admin code, bus fleet, metro fare bands where found);
- ``data/yrd/model_inputs.csv``: what the model needs beyond them (seat coordinates, fares, free
  age, card standard, metro lines and km where not found), each row's ``basis`` saying which
  values are sourced and which are assumptions.

Derived with stated rules (the comments of each file repeat them): card stock per resident by
type from Nantong's published stock (data/nantong/FACTS.md) — the free-ride elderly card from the
city's free age, the other special cards Nantong issues left out; bus lines from the fleet (9
vehicles a line, Nantong's urban figure) or else 50 lines per million residents (Nantong's ratio);
zones of 45,000 residents; metro lines of equal length, a station every 1.6 km. Nantong keeps its
calibrated file (scenarios/yrd/nantong.yaml extends scenarios/nantong_2024.yaml).

    python scripts/make_yrd.py          # (re)write the files
    python scripts/make_yrd.py --check  # exit 1 if a file differs from what the data give
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITIES_CSV = ROOT / "data" / "yrd" / "cities.csv"
MODEL_CSV = ROOT / "data" / "yrd" / "model_inputs.csv"
OUT_DIR = ROOT / "scenarios" / "yrd"

#: Nantong's card stock per resident (FACTS.md: 1,701,300 cards, 7,743,500 residents).
CARDS_PER_RESIDENT = {"ordinary": 546_300 / 7_743_500, "student": 52_100 / 7_743_500}
#: Nantong's free-ride elderly cards (65+) and half-fare cards (60-64) per resident.
ELDERLY_65_PER_RESIDENT = 759_000 / 7_743_500
HALF_FARE_PER_RESIDENT_5Y = 77_900 / 7_743_500
#: Share of the 65+ who are 70+ (assumption: about 60% in 2024's age structure).
SHARE_70_OF_65 = 0.6
RESIDENTS_PER_ZONE = 45_000
LINES_PER_MILLION = 50
VEHICLES_PER_LINE = 9
STATION_SPACING_KM = 1.6

#: Metro fare bands (upper km, fen) from cities.csv where published; else Nantong's, from the
#: city's start fare (assumption).
NANTONG_BANDS_KM = [6, 11, 16, 23, 30, 45]
BANDS = {
    "nanjing": ([10, 16, 22, 30, 38, 48, 58, 70], [200, 300, 400, 500, 600, 700, 800, 900]),
    "ningbo": ([4, 8, 13, 20, 29, 38, 47], [200, 300, 400, 500, 600, 700, 800]),
    # 2元 for the first 8 km, at most 6元 (line 1); +1元 per 8 km is an assumption.
    "wuhu": ([8, 16, 24, 32, 40], [200, 300, 400, 500, 600]),
}

#: The channel social-security cards clear on across the region (长三角社保卡居民服务一卡通),
#: apart from the transit exchanges; its fee is an assumption. Entries are account debits: the
#: cards' issuers hold no settlement deposit there.
SSC_CHANNEL = (
    "YRD_SSC: {name_zh: 长三角社保卡居民服务一卡通平台, transit_fee_bp: 20, prefunded: false}"
)

#: The national centre settles with the provincial and direct city exchanges on T+2, the rest on
#: the clearing's T+1 (assumption: no published settlement calendar was found; cross-province
#: money takes a day longer).
NATIONAL_LAG = "settlement_lag_days: 2"

#: Provincial exchange of each province (None: the city reports to the national centre).
#: Zhejiang's was not found (cities.csv), so its cities report to the national centre; Anhui's
#: body's role is uncertain (cities.csv): taken as its exchange (assumption).
PROVINCE_NODE = {
    "shanghai": None,
    "jiangsu": ("JS_EXCHANGE", "江苏省交通一卡通清算中心"),
    "zhejiang": None,
    "anhui": ("AH_EXCHANGE", "安徽省交通一卡通清算中心"),
}


def read(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return {row["city_id"]: row for row in csv.DictReader(f)}


def city_file(fig: dict[str, str], model: dict[str, str]) -> str:
    """The YAML text of one city."""
    cid = fig["city_id"]
    up = cid.upper()
    residents = int(fig["residents"])
    free_age = int(model["elderly_free_age"])
    ratio_65 = 1.0 if free_age <= 65 else SHARE_70_OF_65
    half_years = free_age - 60
    counts = {
        "longevity": round(residents * ELDERLY_65_PER_RESIDENT * ratio_65),
        "love": round(residents * HALF_FARE_PER_RESIDENT_5Y * half_years / 5),
        "ordinary": round(residents * CARDS_PER_RESIDENT["ordinary"]),
        "student": round(residents * CARDS_PER_RESIDENT["student"]),
    }
    if fig["bus_vehicles"]:
        lines = round(int(fig["bus_vehicles"]) / VEHICLES_PER_LINE)
        lines_basis = f"{fig['bus_vehicles']} vehicles ({fig['bus_year']}) / {VEHICLES_PER_LINE}"
    else:
        lines = round(residents / 1e6 * LINES_PER_MILLION)
        lines_basis = f"{LINES_PER_MILLION} per million residents (assumption)"
    zones = max(9, round(residents / RESIDENTS_PER_ZONE))
    start_fare = int(model["metro_start_fare_fen"])
    bands_km, bands_fen = BANDS.get(
        cid, (NANTONG_BANDS_KM, [start_fare + 100 * k for k in range(len(NANTONG_BANDS_KM))])
    )
    province = fig["province"]
    parent = PROVINCE_NODE[province]
    exchange = f"{up}_EXCHANGE"
    nodes = [f"      NATIONAL: {{name_zh: 全国一卡通数据中心, transit_fee_bp: 10, {NATIONAL_LAG}}}"]
    if parent is not None:
        nodes.append(
            f"      {parent[0]}: {{name_zh: {parent[1]}, parent: NATIONAL, transit_fee_bp: 10}}"
        )
    nodes.append(
        f"      {exchange}: {{name_zh: {fig['city_zh']}, "
        f"parent: {parent[0] if parent else 'NATIONAL'}, transit_fee_bp: 10}}"
    )
    nodes.append(f"      {SSC_CHANNEL}")
    if cid != "shanghai":  # the 一码通行 issuer's exchange (city_base.yaml)
        nodes.append(
            "      SHANGHAI_EXCHANGE: {name_zh: 上海, parent: NATIONAL, transit_fee_bp: 10}"
        )
    n_metro = int(model["metro_lines"])
    metro = []
    if n_metro:
        length = float(model["metro_km"]) / n_metro
        stations = max(2, round(length / STATION_SPACING_KM) + 1)
        for k in range(1, n_metro + 1):
            metro.append(
                f"    M{k}: {{name_zh: {k}号线, region: city, stations: {stations}, "
                f"length_km: {length:.1f}, gates_per_station: 6, speed_kmh: 35, "
                f"operator_id: {up}_METRO, opened: 2020-01-01}}"
            )
    standard = model["card_standard"]
    accepts = {
        "jiaotong_lianhe": float(model["accepts_jiaotong_lianhe"]),
        "mohurd": float(model["accepts_mohurd"]),
    }
    accepts_text = ", ".join(f"{k}: {v:g}" for k, v in accepts.items() if k != standard)
    bus_fare = int(model["bus_fare_fen"])
    lag = (
        f"{{listed: {int(model['terminal_listed_days'])}, "
        f"delisted: {int(model['terminal_delisted_days'])}}}"
    )
    operators = [f"{up}_BUS"] + ([f"{up}_METRO"] if n_metro else [])
    lag_block = "\n".join(f"    {op}: {lag}" for op in operators)
    metro_block = "\n".join(metro) if metro else "    {}"
    metro_fares = (
        f"  metro: {{band_upper_km: {bands_km}, band_fare_fen: {bands_fen}}}\n" if metro else ""
    )
    out = f"""\
# {fig["city_zh"]} ({cid}) in the Yangtze River Delta scenario (scenarios/yrd_2024.yaml).
# Written by scripts/make_yrd.py from data/yrd/cities.csv (published figures; sources in
# data/yrd/SOURCES.md) and data/yrd/model_inputs.csv (the rest; its basis column says what is
# an assumption): edit those and run the script, not this file.
# Basis of the model inputs: {model["basis"]}
extends: city_base.yaml
name: yrd_{cid}
description: {fig["city_zh"]} ({province}), one region, a generated bus network and metro.
seed: {int(fig["admin_code"])}

regions:
  # residents: {fig["residents"]} ({fig["residents_year"]}, cities.csv); zones of
  # {RESIDENTS_PER_ZONE:,} residents; bus lines: {lines_basis}.
  city: {{name_zh: 市区, admin_code: "{fig["admin_code"]}", map_lonlat: [{model["seat_lon"]}, \
{model["seat_lat"]}], residents: {residents}, zones: {zones}, zone_spacing_km: 1.6,
         card_adoption_weight: 1.0,
         bus: {{lines: {lines}, stops_per_line: 14, vehicles_per_line: {VEHICLES_PER_LINE}, \
speed_kmh: 16, operator_id: {up}_BUS}}}}

network:
  metro:
    # {n_metro} lines, {model["metro_km"]} km in all, as lines of equal length (a station every
    # {STATION_SPACING_KM} km); opening dates are not modelled (all open before the period).
{metro_block}

population:
  # Card stock per resident as Nantong's (assumption): free-ride elderly cards from age
  # {free_age}, half-fare cards from 60, ordinary and student cards. Concessions and the
  # transfer discount below are Nantong's too (assumption), from the city's free age.
  card_types:
    longevity: {{count: {counts["longevity"]}, age_min: {free_age}}}
    love: {{count: {counts["love"]}, age_max: {free_age - 1}}}
    ordinary: {{count: {counts["ordinary"]}}}
    student: {{count: {counts["student"]}}}
  concession_ages: {{longevity: {free_age}, love: 60}}

fares:
  bus: {{region_fare_fen: {{city: {bus_fare}}}}}
{metro_fares}  concessions:
    longevity: [{{kind: free, label: "{free_age}+ ride free"}}]
    love: [{{kind: percent, discount_pct: 50, label: "60-{free_age - 1} half fare"}}]
    student: [{{kind: percent, discount_pct: 50, label: "students half fare"}}]
  transfer: {{window_min: 60, amount_off_fen: 100, modes: [bus, metro], max_transfers: 1}}
  incomplete_trip: {{charge: max_fare}}
clearing:
  network:
    home_exchange: {exchange}
    nodes:
{chr(10).join(nodes)}
    issuers:
      {up}_CARD: {{name_zh: {fig["city_zh"]}交通卡, exchange: {exchange}, \
media: [physical_card, nfc_virtual_card]}}
      {up}_QR_ALIPAY: {{name_zh: 支付宝, exchange: {exchange}, media: [qr_alipay]}}
      {up}_QR_WECHAT: {{name_zh: 微信, exchange: {exchange}, media: [qr_wechat_tongcheng]}}
      {up}_QR_CITY: {{name_zh: 城市乘车码, exchange: {exchange}, media: [qr_changxing]}}
      {up}_QR_UNIONPAY: {{name_zh: 银联, exchange: {exchange}, media: [qr_unionpay]}}

interop:
  # Days its acquirers' terminals take to apply a change of the interoperable city list
  # (at most 30 to add a city, 7 to remove one; DOMAIN.md §2): assumption.
  terminal_update_days:
{lag_block}

social_security:  # venues and visits: city_base.yaml (assumptions)
  issuer_id: {up}_SSC
  channel: YRD_SSC
  acquirer_id: {up}_CULTURE

city:
  name_zh: {fig["city_zh"]}
  card_standard: {standard}
  accepts: {{{accepts_text}}}
  accepts_yimatongxing: {model["accepts_yimatongxing"]}
  visitor_fare_fen: {bus_fare}

output:
  dir: runs/yrd_{cid}
  card_number_prefix: "{fig["admin_code"]}"
  city_code: "{fig["admin_code"][:4]}"
  issuer_id: {up}_CARD
"""
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    figures, inputs = read(CITIES_CSV), read(MODEL_CSV)
    stale = []
    for cid, model in inputs.items():
        text = city_file(figures[cid], model)
        path = OUT_DIR / f"{cid}.yaml"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run scripts/make_yrd.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
