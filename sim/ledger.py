"""Double-entry money ledger in integer fen, and the run's money invariants.

The ledger is the consolidated book of the whole card ecosystem (issuers, acquirers, clearing
nodes), not one company's books: intercompany claims show up as ``settle:`` accounts that net to
zero. Postings are aggregates (one row per day, flow and participant or participant pair), never one
row per tap, so a year of Nantong fits in a few hundred thousand rows.

Chart of accounts. A name is ``"<kind>:<participant id>"``, e.g. ``"float:NTCARD"``. Balances are
debit minus credit: assets are positive, liabilities and income negative.

==============  =========  ====================================================================
kind            type       meaning
==============  =========  ====================================================================
``bank``        asset      the participant's bank account; top-ups and QR fares arrive here
``deposit``     asset      issuer's settlement deposit (结算预存资金) held by the exchange
``float``       liability  stored value owed to the issuer's cardholders (= sum of card balances)
``unsettled``   liability  fares taken from cards or QR accounts, not yet cleared or refunded
``settle``      clearing   net settlement position with the exchange network for cleared, not yet
                           settled batches: debit = to receive, credit = to pay; zero after T+lag
``revenue``     income     acquirer's fare revenue (gross, recognised at clearing)
``fees_paid``   expense    clearing service fees charged to the acquirer
``fees``        income     clearing service fees earned by a clearing node
==============  =========  ====================================================================

Money enters and leaves the ecosystem only through ``bank`` accounts (top-ups, QR fares, cash and
QR refunds), always against a liability, so no equity account is needed and the trial balance (sum
of all balances) is zero by construction; ``Ledger.check`` verifies it from the journal anyway.

Invariant checks raise ``InvariantViolation(name, delta_fen, where)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.codes import CLEARED, TX_STATUS
from sim.grouping import stable_order

#: Account kinds of the chart of accounts (see the module docstring).
ACCOUNT_KINDS: tuple[str, ...] = (
    "bank",
    "deposit",
    "float",
    "unsettled",
    "settle",
    "revenue",
    "fees_paid",
    "fees",
)
_KIND_SET = frozenset(ACCOUNT_KINDS)


class InvariantViolation(RuntimeError):
    """A money invariant failed: says which one, by how many fen, and where."""

    def __init__(self, name: str, delta_fen: int, where: str, detail: str = "") -> None:
        self.name = name
        self.delta_fen = int(delta_fen)
        self.where = where
        self.detail = detail
        msg = f"invariant {name!r} violated by {self.delta_fen:+d} fen at {where}"
        super().__init__(f"{msg}: {detail}" if detail else msg)

    def __reduce__(self):  # keep it picklable (Dask ships exceptions between workers)
        return (type(self), (self.name, self.delta_fen, self.where, self.detail))


def account(kind: str, participant_id: str) -> str:
    """Build an account name, checking the kind against the chart of accounts."""
    if kind not in _KIND_SET:
        raise ValueError(
            f"unknown account kind {kind!r}; expected one of {', '.join(ACCOUNT_KINDS)}"
        )
    return f"{kind}:{participant_id}"


def _check_name(name: str) -> None:
    kind, sep, owner = name.partition(":")
    if not sep or not owner or kind not in _KIND_SET:
        raise ValueError(
            f"bad account name {name!r}: expected '<kind>:<participant>' with kind in "
            f"{', '.join(ACCOUNT_KINDS)}"
        )


def _int_amounts(amounts: object) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(amounts))
    if arr.dtype.kind not in "iu":
        raise TypeError(f"amounts must be integer fen, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and int(arr.min()) < 0:
        raise ValueError("amounts must be >= 0 fen; swap debit and credit for a reversal")
    return arr


class Ledger:
    """Columnar double-entry journal with running balances.

    Each ``post_many`` call appends one chunk of arrays; ``journal_columns`` concatenates them.
    Zero-amount rows are dropped, negative amounts are refused.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._memos: list[str] = []
        self._memo_index: dict[str, int] = {}
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._n = 0
        self._running = np.zeros(16, dtype=np.int64)
        self._cache: tuple[np.ndarray, ...] | None = None
        # Chunks by posting day and the latest day posted: a day's flows and a balance at the
        # end of the latest day read only what they need, not the whole journal.
        self._day_chunks: dict[int, list[tuple[np.ndarray, ...]]] = {}
        self._last_day = -1

    # -- interning ---------------------------------------------------------------------------
    def _code(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            _check_name(name)
            code = len(self._names)
            self._names.append(name)
            self._index[name] = code
            if code >= len(self._running):
                self._running = np.concatenate([self._running, np.zeros_like(self._running)])
        return code

    def _memo_code(self, memo: str) -> int:
        code = self._memo_index.get(memo)
        if code is None:
            code = len(self._memos)
            self._memos.append(memo)
            self._memo_index[memo] = code
        return code

    # -- posting -----------------------------------------------------------------------------
    def post(self, day: int, debit: str, credit: str, amount_fen: int, memo: str) -> int:
        """Post one entry; returns its entry id (-1 if the amount is zero: nothing posted)."""
        ids = self.post_many(day, [debit], [credit], [amount_fen], memo)
        return int(ids[0]) if ids.size else -1

    def post_many(
        self,
        day: int,
        debits: Sequence[str],
        credits: Sequence[str],
        amounts_fen: Sequence[int] | np.ndarray,
        memo: str | Sequence[str],
    ) -> np.ndarray:
        """Post aligned rows (debit, credit, amount) on ``day``; returns their entry ids."""
        amounts = _int_amounts(amounts_fen)
        n = amounts.size
        if len(debits) != n or len(credits) != n:
            raise ValueError(f"{len(debits)} debits, {len(credits)} credits, {n} amounts")
        memos = [memo] * n if isinstance(memo, str) else list(memo)
        if len(memos) != n:
            raise ValueError(f"{len(memos)} memos for {n} amounts")
        keep = np.flatnonzero(amounts)
        if keep.size == 0:
            return np.zeros(0, dtype=np.int64)
        d = np.array([self._code(debits[i]) for i in keep], dtype=np.int32)
        c = np.array([self._code(credits[i]) for i in keep], dtype=np.int32)
        if np.any(d == c):
            bad = self._names[int(d[np.argmax(d == c)])]
            raise ValueError(f"debit and credit are the same account {bad!r}")
        m = np.array([self._memo_code(memos[i]) for i in keep], dtype=np.int32)
        a = amounts[keep]
        days = np.full(keep.size, int(day), dtype=np.int32)
        ids = np.arange(self._n, self._n + keep.size, dtype=np.int64)
        chunk = (days, ids, d, c, a, m)
        self._chunks.append(chunk)
        self._day_chunks.setdefault(int(day), []).append(chunk)
        self._last_day = max(self._last_day, int(day))
        self._n += keep.size
        np.add.at(self._running, d, a)
        np.subtract.at(self._running, c, a)
        self._cache = None
        return ids

    # -- reading -----------------------------------------------------------------------------
    @property
    def n_entries(self) -> int:
        """Number of journal rows."""
        return self._n

    @property
    def accounts(self) -> tuple[str, ...]:
        """Every account that has been posted to, in first-use order."""
        return tuple(self._names)

    def _journal(self) -> tuple[np.ndarray, ...]:
        if self._cache is None:
            if self._chunks:
                self._cache = tuple(
                    np.concatenate(cols) for cols in zip(*self._chunks, strict=True)
                )
                # Keep one compacted chunk, so later reads concatenate only the new postings.
                self._chunks = [self._cache]
            else:
                self._cache = (
                    np.zeros(0, np.int32),
                    np.zeros(0, np.int64),
                    np.zeros(0, np.int32),
                    np.zeros(0, np.int32),
                    np.zeros(0, np.int64),
                    np.zeros(0, np.int32),
                )
        return self._cache

    def balance(self, account_name: str, through_day: int | None = None) -> int:
        """Debit-minus-credit balance of an account, at the end of ``through_day`` if given."""
        _check_name(account_name)
        code = self._index.get(account_name)
        if code is None:
            return 0
        if through_day is None or through_day >= self._last_day:
            return int(self._running[code])
        days, _, d, c, a, _ = self._journal()
        upto = days <= through_day
        return int(a[upto & (d == code)].sum() - a[upto & (c == code)].sum())

    def lowest_daily_balance(self, account_name: str) -> tuple[int, int]:
        """The lowest of an account's balances at the end of each day it was posted on, by the
        postings' own dates, and the first day it stood there: ``(fen, day)``; ``(0, -1)`` for
        an account never posted to. A posting dated before the day it was made shows here
        where the balance was not there to pay it."""
        _check_name(account_name)
        code = self._index.get(account_name)
        if code is None:
            return 0, -1
        days, _, d, c, a, _ = self._journal()
        mine = np.flatnonzero((d == code) | (c == code))
        if not len(mine):
            return 0, -1
        order = mine[np.argsort(days[mine], kind="stable")]
        running = np.cumsum(np.where(d[order] == code, a[order], -a[order]))
        day = days[order]
        day_ends = np.append(np.flatnonzero(day[1:] != day[:-1]), len(day) - 1)
        lowest = int(np.argmin(running[day_ends]))
        return int(running[day_ends][lowest]), int(day[day_ends][lowest])

    def balances(self, prefix: str = "") -> dict[str, int]:
        """Current balances of all accounts whose name starts with ``prefix``."""
        return {
            name: int(self._running[i])
            for i, name in enumerate(self._names)
            if name.startswith(prefix)
        }

    def flows(self, account_name: str, day: int) -> dict[str, int]:
        """Net movement (debit minus credit) of one account on one day, per memo."""
        _check_name(account_name)
        code = self._index.get(account_name)
        out: dict[str, int] = {}
        if code is None:
            return out
        for _, _, d, c, a, m in self._day_chunks.get(int(day), ()):
            for sign, side in ((1, d), (-1, c)):
                rows = side == code
                for memo_code, amt in zip(m[rows].tolist(), a[rows].tolist(), strict=True):
                    memo = self._memos[memo_code]
                    out[memo] = out.get(memo, 0) + sign * amt
        return out

    def _recomputed_balances(self) -> np.ndarray:
        _, _, d, c, a, _ = self._journal()
        bal = np.zeros(len(self._names), dtype=np.int64)
        np.add.at(bal, d, a)
        np.subtract.at(bal, c, a)
        return bal

    def trial_balance(self) -> int:
        """Sum of all account balances recomputed from the journal; zero in a sound ledger."""
        return int(self._recomputed_balances().sum())

    def journal_columns(self) -> dict[str, np.ndarray]:
        """The journal as columns: day, entry_id, debit, credit, amount_fen, memo (strings)."""
        days, ids, d, c, a, m = self._journal()
        names = np.array(self._names, dtype=object)
        memos = np.array(self._memos, dtype=object)
        return {
            "day": days.copy(),
            "entry_id": ids.copy(),
            "debit": names[d] if d.size else np.zeros(0, dtype=object),
            "credit": names[c] if c.size else np.zeros(0, dtype=object),
            "amount_fen": a.copy(),
            "memo": memos[m] if m.size else np.zeros(0, dtype=object),
        }

    # -- invariants --------------------------------------------------------------------------
    def check(self) -> None:
        """Check the ledger: running balances match the journal, the trial balance is zero, and
        on every day the ``settle:`` accounts move by zero in total (positions net to zero)."""
        recomputed = self._recomputed_balances()
        running = self._running[: len(self._names)]
        if not np.array_equal(recomputed, running):
            i = int(np.argmax(recomputed != running))
            raise InvariantViolation(
                "ledger_consistency",
                int(running[i] - recomputed[i]),
                f"account {self._names[i]}",
                "running balance differs from the journal",
            )
        total = int(recomputed.sum())
        if total != 0:
            raise InvariantViolation("trial_balance", total, "whole ledger")
        days, _, d, c, a, _ = self._journal()
        settle = np.array([n.startswith("settle:") for n in self._names], dtype=bool)
        if not settle.any():
            return
        signed = np.where(settle[d], a, 0) - np.where(settle[c], a, 0)
        uniq, inv = np.unique(days, return_inverse=True)
        per_day = np.zeros(uniq.size, dtype=np.int64)
        np.add.at(per_day, inv, signed)
        if per_day.any():
            i = int(np.flatnonzero(per_day)[0])
            raise InvariantViolation(
                "settlement_positions_zero",
                int(per_day[i]),
                f"day {int(uniq[i])}, settle:* accounts",
                "a clearing or settlement posting is missing its counterpart",
            )


def check_conservation(
    day: int,
    issuer: str,
    balance_before_fen: int,
    balance_after_fen: int,
    topups_fen: int,
    fares_fen: int,
    cash_refunds_fen: int,
    duplicate_refunds_fen: int,
    opening_fen: int = 0,
    purse_spend_fen: int = 0,
    desk_refunds_fen: int = 0,
) -> None:
    """Invariant (a): top-ups - fares - cash refunds + duplicate refunds (+ opening balances of
    cards created that day, - non-transit purse payments, + the service desk's refunds) = change
    of the sum of card balances, for one issuer and day."""
    expected = (
        opening_fen
        + topups_fen
        - fares_fen
        - cash_refunds_fen
        + duplicate_refunds_fen
        - purse_spend_fen
        + desk_refunds_fen
    )
    actual = int(balance_after_fen) - int(balance_before_fen)
    if actual != expected:
        raise InvariantViolation(
            "conservation",
            actual - expected,
            f"day {day}, issuer {issuer}",
            f"card balances moved {actual:+d} fen but the day's flows explain {expected:+d} fen "
            f"(opening {opening_fen}, top-ups {topups_fen}, fares {fares_fen}, cash refunds "
            f"{cash_refunds_fen}, duplicate refunds {duplicate_refunds_fen}, purse payments "
            f"{purse_spend_fen}, desk refunds {desk_refunds_fen})",
        )


def check_tap_status(
    tx_id: np.ndarray,
    status: np.ndarray,
    amount_fen: np.ndarray,
    cleared_tx_id: np.ndarray,
    cleared_batch_id: np.ndarray,
) -> None:
    """Invariant (b): every tap is exactly once cleared, rejected or pending.

    ``tx_id``/``status``/``amount_fen`` describe every tap (status codes from ``sim.codes``);
    ``cleared_tx_id``/``cleared_batch_id`` list batch membership of cleared records. A cleared tap
    must be in exactly one batch; pending and rejected taps in none.
    """
    tx_id = np.asarray(tx_id, dtype=np.int64)
    status = np.asarray(status)
    amount_fen = np.asarray(amount_fen, dtype=np.int64)
    cleared_tx_id = np.asarray(cleared_tx_id, dtype=np.int64)
    cleared_batch_id = np.asarray(cleared_batch_id, dtype=np.int64)
    name = "tap_exactly_once"
    if status.size and (int(status.min()) < 0 or int(status.max()) >= len(TX_STATUS)):
        bad_status = (status < 0) | (status >= len(TX_STATUS))
        i = int(np.argmax(bad_status))
        raise InvariantViolation(
            name, int(amount_fen[i]), f"tap tx {int(tx_id[i])}", f"unknown status {int(status[i])}"
        )
    n = tx_id.size
    if n and int(tx_id[-1]) - int(tx_id[0]) == n - 1 and _increasing(tx_id):
        # A day's records are numbered first, first + 1, ... (sim.ids.record_ids): each id's
        # position is its offset from the first, with no sort or search.
        order = None
        pos = cleared_tx_id - tx_id[0]
        found = None if _within(pos, n) else (pos >= 0) & (pos < n)
    else:
        order = stable_order(tx_id)
        stx = tx_id[order]
        repeated = np.flatnonzero(stx[1:] == stx[:-1])
        if repeated.size:
            i = int(order[repeated[0] + 1])
            raise InvariantViolation(
                name,
                int(amount_fen[i]),
                f"tap tx {int(tx_id[i])}",
                "tx id occurs twice in the taps",
            )
        pos = np.searchsorted(stx, cleared_tx_id)
        pos_c = np.minimum(pos, max(stx.size - 1, 0))
        found = (pos < stx.size) & (stx[pos_c] == cleared_tx_id) if stx.size else pos < 0
    if found is not None and not found.all():
        j = int(np.argmax(~found))
        raise InvariantViolation(
            name,
            0,
            f"batch {int(cleared_batch_id[j])}, tx {int(cleared_tx_id[j])}",
            "a batch clears a record that is not a known tap",
        )
    counts = np.bincount(pos if order is None else order[pos], minlength=n)
    cleared = status == CLEARED  # expected counts: 1 for a cleared tap, else 0
    if not np.array_equal(counts, cleared):
        expected = cleared.astype(np.int64)
        bad = np.flatnonzero(counts != expected)
        i = int(bad[0])
        batches = sorted(set(cleared_batch_id[cleared_tx_id == tx_id[i]].tolist()))
        raise InvariantViolation(
            name,
            int(amount_fen[i]) * int(counts[i] - expected[i]),
            f"tap tx {int(tx_id[i])}, batches {batches}",
            f"status {TX_STATUS[int(status[i])]} but cleared in {int(counts[i])} batch(es); "
            f"{bad.size} tap(s) affected",
        )


def _within(pos: np.ndarray, n: int) -> bool:
    """Whether every position is in [0, n) (a min and a max: no mask)."""
    return not pos.size or (int(pos.min()) >= 0 and int(pos.max()) < n)


def _increasing(values: np.ndarray) -> bool:
    """Whether the values strictly increase (n of them from first to first + n - 1: each is
    the one before plus one). One boolean pass, no integer temporary."""
    return bool((values[1:] > values[:-1]).all())


def check_positions(
    settle_day: np.ndarray,
    participant: np.ndarray,
    position_fen: np.ndarray,
    names: Sequence[str] | None = None,
) -> None:
    """Invariant (c): net settlement positions sum to zero on every settlement date."""
    settle_day = np.asarray(settle_day, dtype=np.int64)
    position_fen = np.asarray(position_fen, dtype=np.int64)
    if settle_day.size == 0:
        return
    uniq, inv = np.unique(settle_day, return_inverse=True)
    sums = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(sums, inv, position_fen)
    if sums.any():
        k = int(np.flatnonzero(sums)[0])
        rows = np.flatnonzero(inv == k)
        who = [names[int(p)] if names else str(int(p)) for p in np.asarray(participant)[rows]]
        raise InvariantViolation(
            "settlement_positions_zero",
            int(sums[k]),
            f"settle day {int(uniq[k])}",
            "positions "
            + ", ".join(f"{w} {int(p):+d}" for w, p in zip(who, position_fen[rows], strict=True)),
        )
