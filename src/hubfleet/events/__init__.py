"""Events on hubs: the schedule (`catalog`), ready mode (`ready_mode`), the readiness test (`readiness`) and
the report after an event (`report`)."""
