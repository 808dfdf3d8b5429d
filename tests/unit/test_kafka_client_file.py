"""Client settings files (the command-line tools' credentials): parsed, or one sentence naming the line."""

from __future__ import annotations

import pytest

from include.kafka.client_file import ClientConfigError, client_settings


def test_settings_are_read_with_comments_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("# the pipeline's principal\nsecurity.protocol=SASL_SSL\n\nsasl.password = a=b\n")
    assert client_settings(path) == {"security.protocol": "SASL_SSL", "sasl.password": "a=b"}
    assert client_settings(None) == {}


def test_a_line_without_a_key_names_the_file_and_line_but_not_the_value(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("security.protocol=SASL_SSL\nsecret-without-equals\n")
    with pytest.raises(ClientConfigError, match=r"client.properties, line 2: expected key=value"):
        client_settings(path)
    with pytest.raises(ClientConfigError) as error:
        client_settings(path)
    assert "secret" not in str(error.value)
    with pytest.raises(ClientConfigError, match="cannot read the Kafka client settings file"):
        client_settings(tmp_path / "missing")
