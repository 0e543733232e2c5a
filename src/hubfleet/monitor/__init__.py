"""Monitoring: the uptime prober and incidents (prober, incidents), alerting (alerts), usage collection
(usage) and abnormal-activity rules (anomaly). Each runs as a task of the `hubfleet up` daemon and is a
plain function or class callable from tests."""
