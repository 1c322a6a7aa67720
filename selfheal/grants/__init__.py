"""Least privilege generated from the whitelist: what the worker's credentials may do.

Each module turns a loaded whitelist into the grant one system enforces, allowing
exactly what the whitelisted actions (and the reads they depend on) need:

- ``sudoers``: the worker's account on a host may restart exactly its whitelisted units;
- ``iam``: an IAM policy for the AWS entries, scoped to their ARNs or condition keys;
- ``ssm``: one Systems Manager document per whitelisted unit, whose only parameter is
  constrained, so ``AWS-RunShellScript`` is never needed.

A shadow entry (``mode: shadow``) is decided, never executed, but its decision and its
diagnosis read: it gets exactly those reads and no write (IAM: its read, evidence and
alarm calls; SSM: a document that only shows the unit and reads its journal; sudoers:
nothing, since reads need no sudo, said in a comment).
"""
