"""Costs: billing exports in (FOCUS, via DuckDB), allocation to clusters, hubs, users and groups, budgets and
their alerts, price plans and invoices. See docs/costs.md."""
