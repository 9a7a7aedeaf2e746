"""The operator console: server-rendered pages on the admin listener (overview, events,
event detail, dead letters and pending, destinations, rules playground). Does I/O (the
store, and the destination of a test event).

Served only when the admin listener has a token; signing in with a token gives a session
cookie whose role (viewer or operator) decides what may be done. Pages read the store through
the same query methods as the CLI; actions log one audit line each. `routes.add_console`
wires it into the admin app.
"""
