"""Business logic of the hub: functions that take a session and never import Flask."""
