import pytest

from selfheal.whitelist import matching_entries
from selfheal.whitelist.matchers import parse_matcher


@pytest.mark.parametrize(
    "matcher, labels, expected",
    [
        ('alertname="ApiDown"', {"alertname": "ApiDown"}, True),
        ('alertname="ApiDown"', {"alertname": "ApiDownX"}, False),
        ('alertname=~"Api.*"', {"alertname": "ApiDown"}, True),
        ('alertname=~"Api"', {"alertname": "ApiDown"}, False),  # anchored, as in Alertmanager
        ('env!="prod"', {"env": "staging"}, True),
        ('env!="prod"', {}, True),  # absent label is the empty string
        ('env!~"prod|dr"', {"env": "dr"}, False),
        ('msg="say \\"hi\\""', {"msg": 'say "hi"'}, True),
        ("env=prod", {"env": "prod"}, True),
    ],
)
def test_matchers_behave_like_alertmanager(matcher, labels, expected):
    assert parse_matcher(matcher).matches(labels) is expected


@pytest.mark.parametrize("text", ["alertname", '="x"', 'a=="x"', 'a=~"("'])
def test_malformed_matcher_is_refused_with_the_text(text):
    with pytest.raises(ValueError) as info:
        parse_matcher(text)
    assert repr(text) in str(info.value)


def test_alert_labels_select_entries_in_file_order(demo):
    assert matching_entries(demo, {"alertname": "DemoApiDown", "service": "demo-api"}) == ["restart-demo-api"]
    assert matching_entries(demo, {"alertname": "DemoApiDown", "service": "other"}) == []
    assert matching_entries(demo, {"alertname": "PaymentsWebhookErrors", "region": "us-east-1"}) == []
