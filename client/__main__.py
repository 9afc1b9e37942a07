"""``python -m client``: the ``hashex`` command."""

from client.cli import main

main()
