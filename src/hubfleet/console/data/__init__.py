"""The console's read model: what its pages and JSON API show, as plain JSON-safe dicts and charts.

`source` (what is read: store, fleet, daemon status), `overview` (the fleet table), `details` (hub and
community pages, incidents) and `charts` (chart tables and their CSV). Every function reads the store with a
constant number of grouped queries, whatever the number of hubs. Every time is timezone-aware UTC; dates
and times leave as ISO strings.
"""
