"""The webhook ingress: authenticate, parse, derive incident keys, signal-with-start."""
