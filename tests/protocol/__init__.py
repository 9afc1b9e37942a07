"""Tests of the protocol library (client.protocol)."""
