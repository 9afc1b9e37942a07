"""Hashex client: the protocol library, the sync engine and the ``hashex`` command."""
