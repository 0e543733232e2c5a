"""The Kubernetes clusters under the hubs: versions read live, release calendars, inventory and upgrades."""
