"""the support desk: tickets, their messages, attachments, history, time log, incidents, alerts and mail

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _ticket_id(nullable: bool = False, primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "ticket_id",
        sa.Integer(),
        sa.ForeignKey("tickets.id", ondelete="CASCADE"),
        nullable=nullable,
        primary_key=primary_key,
    )


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("hub", sa.String(200), nullable=True),
        sa.Column("community", sa.String(200), nullable=True),
        sa.Column("username", sa.String(200), nullable=True),
        sa.Column("requester_name", sa.String(200), nullable=False),
        sa.Column("requester_email", sa.String(320), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("opened_by", sa.String(200), nullable=True),
        sa.Column("category", sa.String(30), nullable=False),
        sa.Column("urgency", sa.String(10), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("line", sa.String(10), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("page_url", sa.String(2000), nullable=True),
        sa.Column("environment", sa.String(200), nullable=True),
        sa.Column("context", sa.JSON(), nullable=True),
        sa.Column("intake_ref", sa.String(100), nullable=True),
        sa.Column("mail_thread", sa.String(400), nullable=True),
        _when("created_at", False),
        _when("updated_at", False),
        _when("first_response_at"),
        _when("resolved_at"),
        _when("closed_at"),
        sa.Column("pauses", sa.JSON(), nullable=False),
        _when("due_first_response"),
        _when("due_resolution"),
        sa.Column("confirm_token_hash", sa.String(64), nullable=True),
        sa.Column("survey_token_hash", sa.String(64), nullable=True),
        sa.Column("survey_score", sa.Integer(), nullable=True),
        sa.Column("survey_comment", sa.Text(), nullable=True),
        sa.UniqueConstraint("hub", "intake_ref", name="uq_tickets_intake"),
    )
    op.create_index("ix_tickets_state", "tickets", ["state"])
    op.create_index("ix_tickets_community", "tickets", ["community"])
    op.create_index("ix_tickets_assignee", "tickets", ["assignee"])
    op.create_index("ix_tickets_hub", "tickets", ["hub"])
    op.create_index("ix_tickets_requester_email", "tickets", ["requester_email"])
    op.create_index("ix_tickets_mail_thread", "tickets", ["mail_thread"])
    op.create_index("ix_tickets_created_at", "tickets", ["created_at"])
    op.create_table(
        "ticket_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(),
        _when("at", False),
        sa.Column("author", sa.String(320), nullable=False),
        sa.Column("author_kind", sa.String(20), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("via", sa.String(20), nullable=False),
        sa.Column("mail_id", sa.String(400), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_ticket_messages_ticket_id", "ticket_messages", ["ticket_id"])
    op.create_index("ix_ticket_messages_mail_id", "ticket_messages", ["mail_id"])
    op.create_table(
        "ticket_attachments",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _when("at", False),
    )
    op.create_index("ix_ticket_attachments_ticket_id", "ticket_attachments", ["ticket_id"])
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(),
        _when("at", False),
        sa.Column("actor", sa.String(320), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_ticket_events_ticket_id", "ticket_events", ["ticket_id"])
    op.create_table(
        "ticket_time",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(),
        sa.Column("community", sa.String(200), nullable=True),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _when("at", False),
    )
    op.create_index("ix_ticket_time_ticket_id", "ticket_time", ["ticket_id"])
    op.create_index("ix_ticket_time_community", "ticket_time", ["community"])
    op.create_index("ix_ticket_time_at", "ticket_time", ["at"])
    op.create_table(
        "ticket_incidents",
        _ticket_id(primary_key=True),
        sa.Column("incident_id", sa.Integer(), primary_key=True),
        _when("linked_at", False),
        _when("resolution_noted_at"),
    )
    op.create_table(
        "ticket_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        _when("at", False),
        sa.UniqueConstraint("ticket_id", "target", "level", name="uq_ticket_alerts_once"),
    )
    op.create_table(
        "ticket_mail",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ticket_id(nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mail_id", sa.String(400), nullable=False),
        sa.Column("in_reply_to", sa.String(400), nullable=True),
        _when("created_at", False),
        _when("sent_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _when("next_attempt_at"),
    )
    op.create_index("ix_ticket_mail_ticket_id", "ticket_mail", ["ticket_id"])
    op.create_index("ix_ticket_mail_pending", "ticket_mail", ["sent_at", "attempts"])


def downgrade() -> None:
    for table in (
        "ticket_mail",
        "ticket_alerts",
        "ticket_incidents",
        "ticket_time",
        "ticket_events",
        "ticket_attachments",
        "ticket_messages",
        "tickets",
    ):
        op.drop_table(table)
