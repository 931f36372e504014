"""Golden-file summary of a small scenario run: what the regression test compares.

Regenerate on purpose only, after an intended behaviour change, and review the diff:

    .venv/bin/python tests/golden_summary.py --update
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "small_ci_3days.json"
QUERIES = {
    "rows_per_table": """
        select 'transactions' t, count(*) n from transactions union all
        select 'topups', count(*) from topups union all
        select 'card_sales', count(*) from card_sales union all
        select 'outlet_visits', count(*) from outlet_visits union all
        select 'device_uploads', count(*) from device_uploads union all
        select 'clearing_batches', count(*) from clearing_batches union all
        select 'settlements', count(*) from settlements union all
        select 'ledger_entries', count(*) from ledger_entries order by 1""",
    "taps_by_day_status": """
        select cast(service_date as varchar) d, status, count(*) n, sum(amount_fen) fen
        from transactions group by all order by all""",
    "spend_by_media": """
        select media, count(*) n, sum(amount_fen) fen from transactions
        where status = 'cleared' group by all order by all""",
    "spend_by_category": """
        select rider_category, mode, count(*) n, sum(amount_fen) fen from transactions
        where status = 'cleared' group by all order by all""",
    "topups": """
        select channel, count(*) n, sum(amount_fen) fen from topups group by all order by all""",
    "clearing": """
        select transit, sum(submitted), sum(cleared), sum(rejected), sum(gross_fen), sum(fee_fen)
        from clearing_batches group by all order by all""",
    "settlement_books": """
        select node_id, count(*) n, sum(net_position_fen) total, sum(abs(net_position_fen)) moved
        from settlements group by all order by all""",
    "ledger_by_memo": """
        select memo, count(*) n, sum(amount_fen) fen from ledger_entries
        group by all order by all""",
    "first_taps": """
        select transaction_id, cast(event_timestamp as varchar) ts, amount_fen, balance_after_fen,
               route_id, device_id, tac from transactions order by transaction_id limit 5""",
}


def summarise(out_dir: Path) -> dict:
    """Run the golden queries against a run directory's DuckDB catalogue."""
    con = duckdb.connect(str(out_dir / "cardtwin.duckdb"), read_only=True)
    result = {}
    for name, sql in QUERIES.items():
        rows = con.execute(sql).fetchall()
        result[name] = [
            [v if isinstance(v, (int, str)) or v is None else str(v) for v in row] for row in rows
        ]
    con.close()
    return result


def run_small(out_dir: Path) -> dict:
    """Run scenarios/small_ci.yaml for 3 days into ``out_dir`` and summarise it."""
    sys.path.insert(0, str(ROOT))
    from sim.api import load_scenario, run
    from sim.privacy import load_key

    # The test key: pseudonyms and check values must not depend on the machine's own key.
    key = load_key(ROOT / "tests" / "data" / "test_privacy.key")
    run(load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=3), out_dir, privacy_key=key)
    return summarise(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the golden file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_small(Path(tmp) / "run")
    text = json.dumps(summary, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if args.update:
        GOLDEN.write_text(text, encoding="utf-8")
        print(f"wrote {GOLDEN}")
    else:
        print(text)


if __name__ == "__main__":
    main()
