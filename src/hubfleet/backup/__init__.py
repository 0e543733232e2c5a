"""Backups of hubs (restic), restores, disk use and retiring a hub."""
