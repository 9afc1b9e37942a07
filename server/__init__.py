"""The Hashex hub: a Flask app, its database, services and admin CLI.

Importing this package imports nothing else, so the services and the error
hierarchy stay usable without Flask.
"""
