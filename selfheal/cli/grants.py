"""``selfheal whitelist sudoers|iam-policy|ssm-documents``: grants generated from a whitelist.

Thin adapters over ``selfheal.grants``: they load the whitelist (refusing an invalid one
like ``whitelist check``), and print what the grant module renders.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(whitelist_app: typer.Typer, load_or_exit, out, err) -> None:
    @whitelist_app.command("sudoers")
    def sudoers(
        path: Path = typer.Argument(..., help="the whitelist YAML file"),
        host: str = typer.Option(..., "--host", help="the host the sudoers file is for (matched against each entry's host selector)"),
        user: str = typer.Option("selfheal", "--user", help="the worker's account on that host"),
        systemctl: str = typer.Option("/usr/bin/systemctl", "--systemctl", help="absolute path of systemctl on that host"),
    ) -> None:
        """Print a sudoers file: USER may restart exactly HOST's whitelisted units, and nothing else."""
        from selfheal.grants.sudoers import sudoers_text

        loaded = load_or_exit(path)
        try:
            print(sudoers_text(loaded, host=host, user=user, systemctl=systemctl), end="")
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None

    @whitelist_app.command("iam-policy")
    def iam_policy(
        path: Path = typer.Argument(..., help="the whitelist YAML file"),
        runners: Path = typer.Option(None, "--runners", help="the worker's runners file: add what its SSM rules need"),
    ) -> None:
        """Print an IAM policy allowing exactly the calls the AWS entries need, scoped to their ARNs
        (a shadow entry: only the reads its decision and diagnosis make)."""
        from selfheal.grants.iam import policy_document

        loaded = load_or_exit(path)
        extra: list[dict] = []
        if runners is not None:
            from selfheal.activities.routing import RunnersConfig
            from selfheal.grants.ssm import iam_statements

            try:
                config = RunnersConfig.load(runners)
            except ValueError as exc:
                err.print(str(exc), markup=False)
                raise typer.Exit(2) from None
            for rule in config.runners:
                if rule.ssm is not None:
                    extra += iam_statements(loaded, rule.ssm.region, rule.ssm.account, prefix=rule.ssm.document_prefix)
        policy = policy_document(loaded, extra)
        if not policy.get("Statement"):
            err.print(f"an empty policy: {path} has no AWS entry (ecs.rollback, asg.scale, ec2.reboot, lambda.rollback)"
                      + (" and the runners file no SSM rule" if runners is not None else ""), markup=False, soft_wrap=True)
        print(json.dumps(policy, indent=2))

    @whitelist_app.command("ssm-documents")
    def ssm_documents(
        path: Path = typer.Argument(..., help="the whitelist YAML file"),
        out_dir: Path = typer.Option(None, "--out", help="write NAME.json files here instead of printing them"),
    ) -> None:
        """Print (or write) one SSM Command document per whitelisted system unit (a shadow entry's only reads)."""
        from selfheal.grants.ssm import documents

        loaded = load_or_exit(path)
        docs = documents(loaded)
        if not docs:  # said on stderr, so the printed JSON stays what a pipe expects
            err.print(f"no SSM documents: {path} has no systemd.restart entry of scope system (SSM runs as root, so a "
                      "user-scope unit gets none; the demo's unit is user-scope)", markup=False, soft_wrap=True)
        if out_dir is None:
            print(json.dumps(docs, indent=2))
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
            out.print(f"wrote {out_dir / (name + '.json')}")
