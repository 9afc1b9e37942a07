"""HTTP API v1: one blueprint per resource, each view a few lines over a service."""
