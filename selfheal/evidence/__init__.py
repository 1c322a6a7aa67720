"""What a diagnosis may read, and how what it read is cleaned before it goes anywhere.

``config.py``: the reviewed evidence configuration (sources, which entries may read them);
``redact.py``: secrets taken out of text before it enters a workflow history, a
notification, or leaves the machine.
"""
