"""The Hashex wire format: entries, digests, keys and signed documents.

Pure code with no I/O beyond what a caller hands in; the server verifies
uploads with exactly this code, so client and hub can never disagree about
what is canonical.
"""
