"""The verbs of the ``hashex`` command, one module per area."""
