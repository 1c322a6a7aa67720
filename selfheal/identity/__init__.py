"""Who decided, proven: what a person or an ingress signs and how it is checked.

``attest.py``: the statements (an approval, a pause, an evidence view) and their checks,
which workflows run against the keys in their whitelist snapshot; ``signing.py``: which
SSH key the CLI signs with. The rules for what a proven statement counts for are the
workflows' (``workflows/approvals.py``, ``workflows/governor.py``); the ingress proves
people by token or Slack signature and attests for them (``selfheal/ingress/approvals.py``).
"""
