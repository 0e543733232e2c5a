"""Tenants apart on one machine: OS accounts per hub user and per hub, control-group limits, and the
spawner a hub uses to ask the privileged part of the daemon to start its users' servers."""
