"""verify's side-by-side sums (sim/verify.py ``_compare``): the journal against the records,
the nodes' books against the journal, a line per differing key and one counting the rest."""

from __future__ import annotations

from sim.verify import _SHOWN, _compare


def test_each_key_whose_sums_differ_is_one_line_naming_table_date_and_who():
    found = {("2024-01-01", "NTCARD"): 500, ("2024-01-02", "NTCARD"): 7}
    other = {("2024-01-01", "NTCARD"): 500, ("2024-01-03", "QR_ALIPAY"): 90}
    assert _compare("fares posted", found, "charged records", other) == [
        "ledger_entries, 2024-01-02, issuer NTCARD: fares posted 7 fen, charged records 0 fen",
        "ledger_entries, 2024-01-03, issuer QR_ALIPAY: fares posted 0 fen, charged records 90 fen",
    ]
    assert _compare(
        "net position", found, "settlement entries", other, table="settlements", who="node"
    )[0] == ("settlements, 2024-01-02, node NTCARD: net position 7 fen, settlement entries 0 fen")
    assert _compare("same", found, "same again", dict(found)) == []


def test_past_the_shown_lines_one_line_counts_the_rest():
    found = {(f"2024-01-{d:02d}", "NTCARD"): d for d in range(1, _SHOWN + 5)}
    lines = _compare("fees", found, "batches' fee_fen", {}, table="settlements", who="node")
    assert len(lines) == _SHOWN + 1
    assert lines[-1] == "settlements: fees differ on more day(s) x node(s) (4 not shown)"
