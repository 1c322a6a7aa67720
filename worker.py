"""The worker process, as the design card places it: ``python worker.py``.

The code lives in ``selfheal.worker`` so that an installed selfheal adds no top-level
``worker`` module to anyone's environment; this file only launches it.
"""

from selfheal.worker import main

if __name__ == "__main__":
    main()
