"""The support desk: tickets from the hubs' help button, mail and the console, with the hub's context,
first and second line, response-time targets on a working-time calendar, and support hours.
See docs/support.md."""
