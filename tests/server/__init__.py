"""Tests of the hub (server/ and migrations/)."""
