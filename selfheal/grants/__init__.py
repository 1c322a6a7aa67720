"""Least privilege generated from the whitelist: what the worker's credentials may do.

Each module turns a loaded whitelist into the grant one system enforces, allowing
exactly what the whitelisted actions (and the reads they depend on) need:

- ``sudoers``: the worker's account on a host may restart exactly its whitelisted units;
- ``iam``: an IAM policy for the AWS entries, scoped to their ARNs or condition keys;
- ``ssm``: one Systems Manager document per whitelisted unit, whose only parameter is
  constrained, so ``AWS-RunShellScript`` is never needed.
"""
