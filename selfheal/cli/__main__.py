"""``python -m selfheal.cli``: the same as the ``selfheal`` command."""

from selfheal.cli import main

main()
