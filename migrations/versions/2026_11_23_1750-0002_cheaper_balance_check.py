"""cheaper balance check: one query per transaction at commit, not two per entry

The deferred checks stay as strict as before; they stop repeating work. A transaction inserted
in the committing database transaction is checked once, by its own `transactions` trigger;
the per-entry trigger then only checks entries added to a transaction written earlier (which
must still balance). One aggregate query checks both "sums to zero per asset" and "at least
two entries".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSERT_BALANCED = """
CREATE OR REPLACE FUNCTION ledger_assert_balanced(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
    entry_count bigint;
BEGIN
    SELECT min(asset) FILTER (WHERE total <> 0), coalesce(sum(n), 0)
      INTO unbalanced, entry_count
      FROM (SELECT asset, sum(amount) AS total, count(*) AS n
              FROM entries WHERE transaction_id = tx GROUP BY asset) per_asset;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'transaction % does not balance in %', tx, unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    IF entry_count < 2 THEN
        RAISE EXCEPTION 'transaction % has fewer than two entries', tx
            USING ERRCODE = 'check_violation';
    END IF;
END $$
"""

CHECK_ENTRY = """
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Written by this same database transaction: its transactions-row trigger checks it.
    IF EXISTS (SELECT 1 FROM transactions
               WHERE id = NEW.transaction_id AND xmin = pg_current_xact_id()::xid) THEN
        RETURN NULL;
    END IF;
    PERFORM ledger_assert_balanced(NEW.transaction_id);
    RETURN NULL;
END $$
"""

OLD_ASSERT_BALANCED = """
CREATE OR REPLACE FUNCTION ledger_assert_balanced(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    bad_asset text;
BEGIN
    SELECT asset INTO bad_asset FROM entries WHERE transaction_id = tx
        GROUP BY asset HAVING sum(amount) <> 0 LIMIT 1;
    IF bad_asset IS NOT NULL THEN
        RAISE EXCEPTION 'transaction % does not balance in %', tx, bad_asset
            USING ERRCODE = 'check_violation';
    END IF;
    IF (SELECT count(*) FROM entries WHERE transaction_id = tx) < 2 THEN
        RAISE EXCEPTION 'transaction % has fewer than two entries', tx
            USING ERRCODE = 'check_violation';
    END IF;
END $$
"""

OLD_CHECK_ENTRY = """
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_assert_balanced(NEW.transaction_id);
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(ASSERT_BALANCED)
    op.execute(CHECK_ENTRY)


def downgrade() -> None:
    op.execute(OLD_CHECK_ENTRY)
    op.execute(OLD_ASSERT_BALANCED)
