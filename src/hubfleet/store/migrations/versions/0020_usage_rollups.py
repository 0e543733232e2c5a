"""usage roll-ups: per-day bitmaps of active people and accounts, kept fresh from user_days by triggers
(hubfleet.store.usage_rollups), back-filled from every user day stored; user_days loses the two covering
indexes of 0004 (≈ a quarter of its bytes), which only the distinct counts read

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

KEY_COLUMNS = "hub, username, day, identity"
"""An update of these changes who was active when; first_seen/last_seen (every minute) do not."""

SQLITE_TRIGGERS = [
    "CREATE TRIGGER usage_stale_insert AFTER INSERT ON user_days BEGIN"
    " INSERT OR IGNORE INTO usage_stale_days (hub, day) VALUES (NEW.hub, NEW.day); END",
    "CREATE TRIGGER usage_stale_delete AFTER DELETE ON user_days BEGIN"
    " INSERT OR IGNORE INTO usage_stale_days (hub, day) VALUES (OLD.hub, OLD.day); END",
    f"CREATE TRIGGER usage_stale_update AFTER UPDATE OF {KEY_COLUMNS} ON user_days BEGIN"
    " INSERT OR IGNORE INTO usage_stale_days (hub, day) VALUES (OLD.hub, OLD.day);"
    " INSERT OR IGNORE INTO usage_stale_days (hub, day) VALUES (NEW.hub, NEW.day); END",
]
POSTGRES_TRIGGERS = [
    """CREATE FUNCTION usage_mark_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO usage_stale_days (hub, day) VALUES (OLD.hub, OLD.day) ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    INSERT INTO usage_stale_days (hub, day) VALUES (NEW.hub, NEW.day) ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER usage_stale_insert_delete AFTER INSERT OR DELETE ON user_days"
    " FOR EACH ROW EXECUTE FUNCTION usage_mark_stale()",
    f"CREATE TRIGGER usage_stale_update AFTER UPDATE OF {KEY_COLUMNS} ON user_days"
    " FOR EACH ROW EXECUTE FUNCTION usage_mark_stale()",
]


def upgrade() -> None:
    op.create_table(
        "usage_people",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("identity", sa.String(400), nullable=False, unique=True),
    )
    op.create_table(
        "usage_accounts",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("username", sa.String(255), primary_key=True),
        sa.Column("number", sa.Integer(), nullable=False),
    )
    op.create_table(
        "usage_hub_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("accounts", sa.LargeBinary(), nullable=False),
        sa.Column("people", sa.LargeBinary(), nullable=False),
        sqlite_with_rowid=False,  # rows kept in (day, hub) order: a window is one range read
    )
    op.create_index("ix_usage_hub_days_hub_day", "usage_hub_days", ["hub", "day"])
    op.create_table(
        "usage_fleet_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("people_count", sa.Integer(), nullable=False),
        sa.Column("people", sa.LargeBinary(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "usage_stale_days",
        sa.Column("hub", sa.String(200), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
    )
    # 0004's covering indexes served COUNT(DISTINCT) over user_days; the roll-ups answer those now
    op.drop_index("ix_user_days_hub_day_identity", "user_days")
    op.drop_index("ix_user_days_day_identity", "user_days")
    bind = op.get_bind()
    for statement in POSTGRES_TRIGGERS if bind.dialect.name == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)
    # Back-fill: every hub-day stored is stale, then built as the collector builds it.
    op.execute("INSERT INTO usage_stale_days (hub, day) SELECT DISTINCT hub, day FROM user_days")
    from hubfleet.store.usage_rollups import refresh

    refresh(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS usage_stale_update ON user_days")
        op.execute("DROP TRIGGER IF EXISTS usage_stale_insert_delete ON user_days")
        op.execute("DROP FUNCTION IF EXISTS usage_mark_stale()")
    else:
        for name in ("usage_stale_insert", "usage_stale_delete", "usage_stale_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("usage_stale_days")
    op.drop_table("usage_fleet_days")
    op.drop_index("ix_usage_hub_days_hub_day", "usage_hub_days")
    op.drop_table("usage_hub_days")
    op.drop_table("usage_accounts")
    op.drop_table("usage_people")
    op.create_index("ix_user_days_day_identity", "user_days", ["day", "identity"])
    op.create_index("ix_user_days_hub_day_identity", "user_days", ["hub", "day", "identity"])
