"""Secrets in log text are redacted before they reach history, a notification or the network,
and the evidence around them survives."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfheal.evidence import redact as redact_module
from selfheal.evidence.redact import DEFAULT, Pattern, RedactionConfig, Redactor, redact

# Fake secrets. Token-shaped ones are assembled from pieces so that secret scanners looking
# at this file do not mistake them for leaked credentials.
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampletoken"
GITHUB = "gh" + "s_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "gh" + "p_" + "Xy9zAbCdEfGhIjKlMnOpQrStUvWxYz012345"
SLACK_BOT = "xo" + "xb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_HOOK_PATH = "T0123ABCD/B0456EFGH/" + "xYzAbC123dEf456GhI789jKl"
STRIPE = "sk" + "_live_" + "51HfakeFAKEfake00000000000000"
GOOGLE = "AI" + "za" + "SyD-fake_FAKE-fake_FAKE-fake_FAKE12"
ANTHROPIC = "sk-" + "ant-" + "api03-FAKEfakeFAKEfakeFAKEfake_-FAKEfake"
OPENAI = "sk-" + "proj-" + "FAKEfakeFAKEfakeFAKEfake0123456789"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkJvYiIsImlhdCI6MTUxNjIzOTAyMn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
RSA_BODY = "MIIEowIBAAKCAQEAv1fakefakefakefakefakefakefakefake0123456789+/\nAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstuvwx=="
SSH_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDfakefakefakefakefakefakefakefakefakefakeAAAA"


def check(line: str, secrets: list[str], kept: list[str]) -> str:
    out = redact(line)
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived in {out!r}"
    for context in kept:
        assert context in out, f"{context!r} lost from {out!r}"
    assert redact(out) == out, "redacting twice must equal redacting once"
    return out


# --- realistic log lines -------------------------------------------------------------------


def test_nginx_access_log_basic_auth_url_and_query_token():
    line = (
        '10.0.4.17 - admin [01/May/2026:12:00:00 +0000] "GET https://admin:Tr0ub4dor@internal.example.com'
        '/metrics?token=7f9c2ba4e88f827d616045507605853e&format=prom HTTP/1.1" 200 512 "-" "curl/8.4.0"'
    )
    out = check(
        line,
        ["Tr0ub4dor", "7f9c2ba4e88f827d616045507605853e"],
        ["10.0.4.17 - admin [01/May/2026:12:00:00 +0000]", "&format=prom HTTP/1.1\" 200 512", "curl/8.4.0"],
    )
    assert "https://admin:[REDACTED:url_password]@internal.example.com/metrics?token=[REDACTED:secret]&" in out


def test_apache_access_log_access_token_in_query_string():
    line = (
        '192.168.1.20 - - [01/May/2026:12:00:01 +0000] "GET /oauth/callback?code=4%2F0Ab&access_token='
        'ya29.a0AfH6SMBxFAKE-token_value HTTP/1.1" 302 - "https://app.example.com/login" "Mozilla/5.0"'
    )
    out = check(line, ["ya29.a0AfH6SMBxFAKE-token_value"], ["/oauth/callback?code=4%2F0Ab&", "302 -", "Mozilla/5.0"])
    assert "access_token=[REDACTED:secret] HTTP/1.1" in out


def test_python_traceback_with_sqlalchemy_url():
    text = (
        "Traceback (most recent call last):\n"
        '  File "/app/checkout/db.py", line 12, in connect\n'
        '    engine = create_engine("postgresql+psycopg2://app:S3cr3t!@db:5432/app")\n'
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) connection to server at "
        '"db" (10.0.3.5), port 5432 failed: FATAL:  password authentication failed for user "app"\n'
    )
    out = check(
        text,
        ["S3cr3t!"],
        ['File "/app/checkout/db.py", line 12', "password authentication failed for user \"app\"", "(10.0.3.5)"],
    )
    assert 'create_engine("postgresql+psycopg2://app:[REDACTED:url_password]@db:5432/app")' in out


@pytest.mark.parametrize("scheme", ["postgres", "mysql", "redis", "amqp", "https", "mongodb+srv"])
def test_password_in_url_of_any_scheme(scheme):
    out = check(f"connecting to {scheme}://svc:p%40ss:w0rd@broker.internal:1234/vhost", ["p%40ss:w0rd"], [])
    assert out == f"connecting to {scheme}://svc:[REDACTED:url_password]@broker.internal:1234/vhost"


def test_botocore_debug_log():
    text = (
        "2026-05-01 12:00:00,125 botocore.endpoint [DEBUG] Making request for OperationModel(name=DescribeInstances) "
        "with params: {'url_path': '/', 'headers': {'Authorization': b'AWS4-HMAC-SHA256 "
        f"Credential={AWS_KEY_ID}/20260501/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7', "
        f"'X-Amz-Date': b'20260501T120000Z', 'X-Amz-Security-Token': b'{SESSION_TOKEN}'}}}}\n"
        "2026-05-01 12:00:00,126 botocore.parsers [DEBUG] Response body: {'Credentials': "
        f"{{'AccessKeyId': '{AWS_KEY_ID}', 'SecretAccessKey': '{AWS_SECRET}', 'SessionToken': '{SESSION_TOKEN}'}}}}\n"
        f"aws_secret_access_key = {AWS_SECRET}\n"
    )
    out = check(
        text,
        [AWS_KEY_ID, AWS_SECRET, SESSION_TOKEN],
        ["b'AWS4-HMAC-SHA256 Credential=", "/20260501/us-east-1/ec2/aws4_request", "'X-Amz-Date': b'20260501T120000Z'",
         "OperationModel(name=DescribeInstances)"],
    )
    assert "'SecretAccessKey': '[REDACTED:aws_secret_access_key]'" in out
    assert "'X-Amz-Security-Token': b'[REDACTED:aws_session_token]'" in out
    assert "aws_secret_access_key = [REDACTED:aws_secret_access_key]" in out
    assert "Credential=[REDACTED:aws_access_key_id]/20260501" in out


def test_journald_json_with_authorization_header():
    line = (
        '{"__REALTIME_TIMESTAMP":"1777636800000000","_HOSTNAME":"web-1","_SYSTEMD_UNIT":"api.service",'
        '"MESSAGE":"upstream 502, request headers: Authorization: Bearer 0b79bab50daca910b000d4f1a2b675d604257e42",'
        '"PRIORITY":"3"}'
    )
    out = check(line, ["0b79bab50daca910b000d4f1a2b675d604257e42"], ['"_SYSTEMD_UNIT":"api.service"', '"PRIORITY":"3"}'])
    assert "Authorization: Bearer [REDACTED:bearer_token]\"," in out


def test_journald_message_with_escaped_json_headers():
    line = r'{"MESSAGE":"headers={\"authorization\": \"Basic YWRtaW46aHVudGVyMg==\", \"accept\": \"*/*\"}","_PID":"812"}'
    out = check(line, ["YWRtaW46aHVudGVyMg=="], [r'\"accept\": \"*/*\"', '"_PID":"812"'])
    assert r'\"authorization\": \"Basic [REDACTED:bearer_token]\"' in out


def test_json_authorization_field():
    out = check('{"authorization": "Bearer abc.def-ghi", "path": "/v1/orders"}', ["abc.def-ghi"], ['"path": "/v1/orders"'])
    assert out.startswith('{"authorization": "Bearer [REDACTED:bearer_token]"')


def test_curl_command_lines():
    line = (
        "+ curl -sS -X POST -H 'Authorization: Bearer 0b79bab50daca910b000d4f1a2b675d604257e42' "
        '-H "X-Api-Key: 9f8e7d6c5b4a3210" -H "Content-Type: application/json" https://api.example.com/v1/deploys'
    )
    out = check(
        line,
        ["0b79bab50daca910b000d4f1a2b675d604257e42", "9f8e7d6c5b4a3210"],
        ["-H 'Authorization: Bearer ", '-H "Content-Type: application/json" https://api.example.com/v1/deploys'],
    )
    assert '"X-Api-Key: [REDACTED:secret]"' in out


def test_header_examples_from_the_brief():
    assert redact("Authorization: Bearer abc") == "Authorization: Bearer [REDACTED:bearer_token]"
    assert redact("authorization: token abc") == "authorization: token [REDACTED:bearer_token]"
    assert redact("https://user:pass@host/x") == "https://user:[REDACTED:url_password]@host/x"
    assert redact("password=hunter2") == "password=[REDACTED:password]"


def test_private_key_blocks_across_lines():
    text = (
        "deploy: writing key material\n"
        f"-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}\n-----END RSA PRIVATE KEY-----\n"
        "between the keys\n"
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SSH_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
        "deploy: done\n"
    )
    out = check(
        text,
        [RSA_BODY, SSH_BODY, "MIIEowIBAAKCAQEAv1", "b3BlbnNzaC1rZXktdjE", "QyNTUxOQAAACD"],
        ["deploy: writing key material\n", "between the keys\n", "deploy: done\n",
         "-----BEGIN RSA PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"],
    )
    assert out.count("[REDACTED:private_key]") == 2


@pytest.mark.parametrize(
    "kind", ["", "RSA ", "EC ", "DSA ", "ENCRYPTED ", "OPENSSH "],
)
def test_every_private_key_kind(kind):
    out = redact(f"x\n-----BEGIN {kind}PRIVATE KEY-----\n{RSA_BODY}\n-----END {kind}PRIVATE KEY-----\ny")
    assert out == f"x\n-----BEGIN {kind}PRIVATE KEY-----\n[REDACTED:private_key]\n-----END {kind}PRIVATE KEY-----\ny"


def test_pgp_private_key_block():
    text = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF{RSA_BODY}\n-----END PGP PRIVATE KEY BLOCK-----"
    assert RSA_BODY not in redact(text)
    assert "[REDACTED:private_key]" in redact(text)


def test_unterminated_private_key_is_redacted_to_the_end():
    out = check(f"key follows\n-----BEGIN OPENSSH PRIVATE KEY-----\n{SSH_BODY}\nlog line after", [SSH_BODY, "log line after"], ["key follows\n"])
    assert out.endswith("[REDACTED:private_key]")


def test_escaped_private_key_in_json():
    line = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQfake\\n-----END PRIVATE KEY-----\\n", "client_email": "x@y"}'
    check(line, ["MIIEvQfake"], ['"type": "service_account"', '"client_email": "x@y"'])


def test_lines_redacts_a_key_split_across_items():
    items = ["before", "-----BEGIN RSA PRIVATE KEY-----", *RSA_BODY.splitlines(), "-----END RSA PRIVATE KEY-----", "after password=x"]
    out = DEFAULT.lines(items)
    assert len(out) == len(items)
    assert out[0] == "before" and out[-1] == "after password=[REDACTED:password]"
    assert not any(part in "\n".join(out) for part in RSA_BODY.splitlines())
    assert DEFAULT.lines(["-----BEGIN EC PRIVATE KEY-----", "MHcCAQEEIfake", "trailing"]) == [
        "-----BEGIN EC PRIVATE KEY-----", "[REDACTED:private_key]", "[REDACTED:private_key]"]


def test_jwt_in_cookie_header():
    line = f"Cookie: theme=dark; session={JWT}; lang=en"
    out = check(line, [JWT, JWT.split(".")[1]], ["Cookie: theme=dark; session=", "; lang=en"])
    assert out == "Cookie: theme=dark; session=[REDACTED:jwt]; lang=en"


def test_slack_webhook_url():
    line = f"notify: POST https://hooks.slack.com/services/{SLACK_HOOK_PATH} failed: 404 no_service"
    out = check(line, [SLACK_HOOK_PATH, SLACK_HOOK_PATH.split("/")[-1]], ["failed: 404 no_service"])
    assert "https://hooks.slack.com/services/[REDACTED:slack_webhook] failed" in out


def test_github_token_in_git_remote_url():
    line = f"fatal: unable to access 'https://x-access-token:{GITHUB}@github.com/acme/checkout.git/': 403"
    out = check(line, [GITHUB], ["fatal: unable to access", "@github.com/acme/checkout.git/': 403"])
    assert "https://x-access-token:[REDACTED:github_token]@github.com" in out


@pytest.mark.parametrize(
    ("secret", "name"),
    [(GITHUB_PAT, "github_token"), ("github_pat_" + "11ABCDEFG0" + "a" * 40, "github_token"),
     (SLACK_BOT, "slack_token"), (STRIPE, "stripe_key"), ("rk" + "_live_" + "0123456789abcdef", "stripe_key"),
     (GOOGLE, "google_api_key"), (ANTHROPIC, "anthropic_api_key"), (OPENAI, "openai_api_key"),
     ("sk-" + "T3BlbkFJ" + "a1b2c3d4e5f6g7h8i9j0", "openai_api_key"), (JWT, "jwt"),
     ("ASIA" + "Y34FZKBOKMUTVV7A", "aws_access_key_id")],
)
def test_token_formats(secret, name):
    out = check(f"config loaded key {secret} for tenant 42", [secret], ["config loaded key ", " for tenant 42"])
    assert out == f"config loaded key [REDACTED:{name}] for tenant 42"


def test_docker_and_kubernetes_env_dumps():
    dump = (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\n"
        "HOSTNAME=checkout-7d9f8b6c5-x2x9z\n"
        "DB_PASSWORD=pa55-w0rd-prod\n"
        f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n"
        f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
        f"AWS_SESSION_TOKEN={SESSION_TOKEN}\n"
        f"STRIPE_API_KEY={STRIPE}\n"
        "CLIENT_SECRET=not-so-secret-after-all\n"
        "PWD=/app\n"
        "LANG=C.UTF-8\n"
    )
    out = check(
        dump,
        ["pa55-w0rd-prod", AWS_KEY_ID, AWS_SECRET, SESSION_TOKEN, STRIPE, "not-so-secret-after-all"],
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\n", "HOSTNAME=checkout-7d9f8b6c5-x2x9z\n",
         "PWD=/app\n", "LANG=C.UTF-8\n"],
    )
    assert "DB_PASSWORD=[REDACTED:password]\n" in out
    assert "AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_access_key]\n" in out
    assert "AWS_SESSION_TOKEN=[REDACTED:aws_session_token]\n" in out
    docker_inspect = '"Env": ["DB_PASSWORD=hunter2", "TZ=UTC"],'
    assert redact(docker_inspect) == '"Env": ["DB_PASSWORD=[REDACTED:password]", "TZ=UTC"],'


def test_json_log_lines():
    assert redact('{"password": "x", "user": "bob"}') == '{"password": "[REDACTED:password]", "user": "bob"}'
    out = check(
        '{"level":"info","msg":"login","password":"correct horse battery","api_key":"k-123","refresh_token":"r.t","user":"bob"}',
        ["correct horse battery", "horse", "k-123", "r.t"],
        ['{"level":"info","msg":"login","password":"', '","user":"bob"}'],
    )
    assert '"api_key":"[REDACTED:secret]"' in out
    assert redact('{"pwd": "a\\"b c"}') == '{"pwd": "[REDACTED:password]"}'


def test_yaml_and_ini_forms():
    assert redact("  password: hunter2\n  user: bob") == "  password: [REDACTED:password]\n  user: bob"
    assert redact("Server=db;Uid=sa;Pwd=Sql!2026;Database=app") == "Server=db;Uid=sa;Pwd=[REDACTED:password];Database=app"
    assert redact("client_secret = 'abc def'") == "client_secret = '[REDACTED:secret]'"


# --- what must survive ---------------------------------------------------------------------

NOT_SECRETS = [
    "commit 3f786850e387550fdab836ed7e6dc881de23001b pushed to main",
    "request_id=9b2e4c1a-7f3d-4e8b-a1c5-2d6f8e0b9a47 status=200",
    "x-request-id: 1-5f84c7a8-1a2b3c4d5e6f7a8b9c0d1e2f",
    "terminating instance i-0abc123def4567890 in us-east-1a",
    "arn:aws:ecs:us-east-1:123456789012:task-definition/checkout:41",
    "arn:aws:iam::123456789012:role/service-role/checkout-task-role",
    "rolled back to checkout:41 (was checkout:42)",
    "2026-05-01T12:34:56.789Z level=info msg=ok",
    "2026-05-01 12:34:56,789+00:00 upstream 10.0.3.5:5432 and [2001:db8::1]:443",
    "password reset succeeded for user bob",
    "token bucket refill rate=50/s burst=100",
    "passwordless login enabled for bob",
    "Authorization header missing",
    "401 Unauthorized: Authorization header missing or malformed",
    "GET https://api.example.com:8443/v1/orders?page=2&user=bob@example.com HTTP/1.1",
    "ssh://git@github.com/acme/checkout.git",
    "git@github.com:acme/checkout.git",
    "max_tokens=4096 input_tokens=1200 output_tokens=300",
    "DB_PASSWORD_FILE is unset; see /run/secrets/db",
    "PWD=/srv/checkout OLDPWD=/",
    "ecs task-definition-checkout-service-production updated",
    "disk-usage-threshold-exceeded-on-volume-01 at 91%",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "memory usage 93%; restarting checkout.service",
    "",
]


@pytest.mark.parametrize("line", NOT_SECRETS)
def test_non_secrets_survive_unchanged(line):
    assert DEFAULT.text_and_count(line) == (line, 0)


# --- extra patterns and configuration ------------------------------------------------------


def test_extra_pattern_with_named_group_replaces_only_the_group():
    redactor = Redactor([Pattern(name="ticket_key", regex=r"ticket_key\((?P<secret>[a-z0-9]{8,})\)")])
    assert redactor.text("open ticket_key(deadbeef42) now") == "open ticket_key([REDACTED:ticket_key]) now"
    assert redact("open ticket_key(deadbeef42) now") == "open ticket_key(deadbeef42) now"


def test_extra_pattern_without_named_group_replaces_the_whole_match():
    redactor = Redactor([Pattern(name="employee-id", regex=r"EMP-(\d{6})")])
    assert redactor.text_and_count("owner EMP-123456, pager EMP-654321") == (
        "owner [REDACTED:employee-id], pager [REDACTED:employee-id]", 2)


def test_extra_patterns_run_after_the_builtins():
    redactor = Redactor([Pattern(name="anything_after_eq", regex=r"=(?P<secret>\S+)")])
    assert redactor.text("password=hunter2") == "password=[REDACTED:password]"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [({"name": "x", "regex": "(unclosed"}, "does not compile"),
     ({"name": "x", "regex": "a*"}, "empty string"),
     ({"name": "x", "regex": r"\b"}, "empty string"),
     ({"name": "x", "regex": "a" * 1001}, "1000"),
     ({"name": "Bad Name", "regex": "a"}, "pattern"),
     ({"name": "x", "regex": "a", "flags": "i"}, "Extra inputs"),],
)
def test_pattern_validation(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        Pattern(**fields)


def test_pattern_is_frozen():
    pattern = Pattern(name="x", regex="a")
    with pytest.raises(ValidationError):
        pattern.regex = "b"


def test_config_load(tmp_path):
    path = tmp_path / "redaction.yaml"
    path.write_text("patterns:\n  - name: ticket\n    regex: 'TCK-(?P<secret>[0-9]{4,})'\n")
    config = RedactionConfig.load(path)
    assert Redactor(config.patterns).text("see TCK-00991") == "see TCK-[REDACTED:ticket]"
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert RedactionConfig.load(empty).patterns == []


@pytest.mark.parametrize(
    "body",
    ["patterns:\n  - name: bad\n    regex: '(unclosed'\n",
     "patterns:\n  - name: empty\n    regex: 'x*'\n",
     "patterns:\n  - name: ok\n    regex: 'a'\n    extra: 1\n",
     "pattern: []\n",
     "- just a list\n",
     "patterns: [\n",
     "patterns:\n" + "  - {name: p, regex: a}\n" * 101],
)
def test_config_load_refuses_bad_files_naming_the_file(tmp_path, body):
    path = tmp_path / "bad-redaction.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match="bad-redaction.yaml"):
        RedactionConfig.load(path)


def test_config_load_missing_file_names_it(tmp_path):
    with pytest.raises(ValueError, match="nowhere.yaml"):
        RedactionConfig.load(tmp_path / "nowhere.yaml")


def test_config_load_reports_a_duplicate_key_with_every_other_problem_at_its_line(tmp_path):
    path = tmp_path / "redaction.yaml"
    path.write_text("patterns:\n  - name: ticket\n    regex: 'TCK-[0-9]+'\n    regex: 'x*'\n"
                    "  - name: Bad Name\n    regex: '(unclosed'\n  - name: ok\n    regex: a\n    flags: i\n")
    with pytest.raises(ValueError) as info:
        RedactionConfig.load(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{path}:4", "patterns[0].regex"], [f"{path}:5", "patterns[1].name"],
        [f"{path}:6", "patterns[1].regex"], [f"{path}:9", "patterns[2].flags"],
    ]
    assert "key given twice" in lines[0] and "does not compile" in lines[2]
    assert not any("empty string" in line for line in lines)  # the first regex was the one validated
    assert lines[3].endswith("unknown key (not part of the redaction patterns format)")


def test_config_models_forbid_unknown_keys():
    from tests.whitelist.conftest import models_within

    assert all(m.model_config.get("extra") == "forbid" for m in models_within(RedactionConfig))


# --- value() -------------------------------------------------------------------------------


def test_value_deep_redaction():
    evidence = {
        "unit": "checkout.service",
        "lines": [f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "restarted ok"],
        "http": ({"Authorization": "Bearer abc", "Accept": "*/*"}, ("password=x", 3)),
        "env": {"DB_PASSWORD": "hunter2", "db_password_hash_rounds": None, "PWD": "/app"},
        "config": {"client_secret": {"nested": "dict"}, "apiKey": 12345, "x-api-key": "k", "SecretAccessKey": "s",
                   "private_key": "-----BEGIN", "max_tokens": 4096, "tokens": ["a"], "Set-Cookie": "sid=1"},
        "count": 7,
        "ok": True,
        3: "non-string key with password=y",
    }
    out = DEFAULT.value(evidence)
    assert out == {
        "unit": "checkout.service",
        "lines": ["export AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_access_key]", "restarted ok"],
        "http": ({"Authorization": "[REDACTED:authorization]", "Accept": "*/*"}, ("password=[REDACTED:password]", 3)),
        "env": {"DB_PASSWORD": "[REDACTED:password]", "db_password_hash_rounds": None, "PWD": "/app"},
        "config": {"client_secret": "[REDACTED:secret]", "apiKey": "[REDACTED:api_key]", "x-api-key": "[REDACTED:api_key]",
                   "SecretAccessKey": "[REDACTED:secret]", "private_key": "[REDACTED:private_key]",
                   "max_tokens": 4096, "tokens": ["a"], "Set-Cookie": "[REDACTED:cookie]"},
        "count": 7,
        "ok": True,
        3: "non-string key with password=[REDACTED:password]",
    }
    assert evidence["env"]["DB_PASSWORD"] == "hunter2", "value() returns a copy"
    assert isinstance(out["http"], tuple)


def test_value_bounds_nesting():
    deep: object = "password=x"
    for _ in range(200):
        deep = [deep]
    out = DEFAULT.value(deep)
    assert "password=x" not in repr(out)


# --- hostile and odd input -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"password=x", None, 42, ["password=x"]])
def test_text_refuses_non_str(bad):
    with pytest.raises(TypeError):
        DEFAULT.text(bad)
    with pytest.raises(TypeError):
        redact(bad)


def test_lone_surrogates_and_odd_unicode_do_not_crash():
    text = "\ud800 password=\udfff\u200b x \U0001f511 token: \u202eabc\x00 \ufeffAuthorization: Bearer \ud83d"
    out = redact(text)
    assert "\udfff" not in out and "\u202eabc" not in out
    assert out.startswith("\ud800 password=[REDACTED:password]")


def test_large_input_is_truncated_at_a_line_boundary_with_a_marker(monkeypatch):
    monkeypatch.setattr(redact_module, "MAX_CHARS", 1000)
    text = "".join(f"line {i:04d} password=p{i}\n" for i in range(200))
    out = redact(text)
    head, marker = out.rsplit("\n", 1)
    assert marker.startswith("[TRUNCATED:") and marker.endswith(" chars]")
    dropped = int(marker[len("[TRUNCATED:"):-len(" chars]")])
    cut = text.rfind("\n", 0, 1000)
    assert (head, dropped) == (redact(text[:cut]), len(text) - cut)
    assert head.endswith("password=[REDACTED:password]")
    assert "password=p" not in out


def test_default_limit_is_one_mebibyte():
    assert redact_module.MAX_CHARS == 1 << 20
    text = "x" * (redact_module.MAX_CHARS + 10)
    assert redact(text) == "x" * redact_module.MAX_CHARS + "\n[TRUNCATED:10 chars]"


ADVERSARIAL = {
    "a": "a" * 200_000,
    "jwt-dots": "eyJ" + "a." * 50_000,
    "jwt-prefixes": "eyJ" * 70_000,
    "jwt-blocks": ("eyJ" * 341 + "." + "b" * 1000 + " ") * 60,
    "password=": "password=" * 20_000,
    "token: ": "token: " * 30_000,
    "secret_key=": "secret_key=" * 20_000,
    "base64": "aB3+/=" * 35_000,
    "upper": "A" * 200_000,
    "akia": "AKIA" * 50_000,
    "url": "://a:" * 40_000,
    "url-long": "x://" + "a:" * 100_000,
    "url-at": "://a:b@ " * 25_000,
    "bearer": "Authorization: Bearer " * 10_000,
    "authorization": "Authorization: " + "a" * 200_000,
    "pem-begins": "-----BEGIN RSA PRIVATE KEY-----" * 6_000,
    "pem-mismatch": "-----BEGIN RSA PRIVATE KEY-----\n" + "-----END DSA PRIVATE KEY-----\n" * 6_000,
    "json-escapes": '"password": "' + '\\"' * 100_000,
    "sk": "sk-" * 70_000,
    "ghp": "ghp_" * 50_000,
    "colons": ":" * 200_000,
    "quotes": "\"'" * 100_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_input_is_linear(name):
    # A guard against catastrophic backtracking, not a benchmark.
    text = ADVERSARIAL[name]
    start = time.perf_counter()
    DEFAULT.text(text)
    assert time.perf_counter() - start < 2.0


# --- properties ----------------------------------------------------------------------------

UPPER_DIGITS = string.ascii_uppercase + string.digits
B64URL = string.ascii_letters + string.digits + "-_"

aws_key_ids = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"]),
    st.text(UPPER_DIGITS, min_size=16, max_size=16),
)
jwts = st.builds(
    lambda h, p, s: f"eyJ{h}.{p}.{s}",
    st.text(B64URL, min_size=5, max_size=60),
    st.text(B64URL, min_size=8, max_size=200),
    st.text(B64URL, min_size=8, max_size=80),
)
url_passwords = st.text(string.ascii_letters + string.digits + "!$%^*()-_.~+=:@", min_size=8, max_size=40)


@st.composite
def with_secret(draw):
    kind = draw(st.sampled_from(["aws", "jwt", "url"]))
    parts = []
    if kind == "aws":
        secret = draw(aws_key_ids)
        inserted = secret
    elif kind == "jwt":
        secret = draw(jwts)
        inserted = secret
    else:
        secret = draw(url_passwords)
        scheme = draw(st.sampled_from(["https", "postgresql+psycopg2", "redis", "amqp", "mysql"]))
        user = draw(st.text(string.ascii_lowercase, min_size=1, max_size=10))
        parts = [f"{scheme}://{user}:", "@db.internal:5432/app"]
        inserted = parts[0] + secret + parts[1]
    text = draw(st.text(max_size=300))
    at = draw(st.integers(0, len(text)))
    # Everything but the secret, to recognise a secret that was never secret in this text.
    context = " ".join([text, *parts, "[REDACTED:aws_access_key_id] [REDACTED:jwt] [REDACTED:url_password]"])
    return secret, text[:at] + inserted + text[at:], context


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=with_secret())
def test_inserted_secret_never_survives(case):
    secret, text, surrounding = case
    if secret in surrounding:  # the arbitrary text happened to contain it already
        return
    assert secret not in redact(text)


FRAGMENTS = [
    " ", "\n", "=", ":", '"', "'", "\\", "@", "/", ".", ",", ";", "&", "-", "_", "b'", "://", "a", "Z", "0",
    "password", "pwd", "secret", "token", "api_key", "authorization", "Authorization: Bearer ", "Basic ",
    "session_token", "secret_access_key", "AKIA", "eyJ", "sk-", "ghp_", "xoxb-", "hooks.slack.com/services/",
    "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "[REDACTED:jwt]", "]", "[",
    AWS_KEY_ID, AWS_SECRET, JWT, "u:p@h", "abcdefghij0123456789ABCDEFGHIJ",
]


@settings(max_examples=1000, deadline=None)
@given(parts=st.lists(st.sampled_from(FRAGMENTS), max_size=30))
# Found at random: a marker's own ':' completed a URL password on a second pass.
@example(parts=["://", "password", "=", "@", '"', "u:p@h"])
@example(parts=["://", "password", "://", '"', "@"])
@example(parts=["://", "password", ":", "/", "b'", "u:p@h"])
def test_redaction_is_idempotent(parts):
    once = redact("".join(parts))
    assert redact(once) == once
