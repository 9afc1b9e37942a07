"""Tests of the hashex client and its command line."""
