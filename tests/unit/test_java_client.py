"""The librdkafka -> Java client translation (include/kafka/java_client.py), without a broker."""

from __future__ import annotations

import pytest

from include.kafka.java_client import UnsupportedClientSetting, is_secret, java_client_properties

SCRAM = {"bootstrap.servers": "127.0.0.1:9092,127.0.0.1:9192", "security.protocol": "SASL_SSL",
         "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "pipeline", "sasl.password": "pa55-word",
         "ssl.ca.location": "/stack/kafka-auth/ca.pem"}


def test_the_stacks_scram_settings_become_the_java_clients():
    assert java_client_properties(SCRAM) == {
        "bootstrap.servers": "127.0.0.1:9092,127.0.0.1:9192",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                            'username="pipeline" password="pa55-word";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/stack/kafka-auth/ca.pem",
    }


def test_a_relocated_client_names_its_own_login_module():
    shaded = "org.apache.flink.kafka.shaded.org.apache.kafka"
    jaas = java_client_properties(SCRAM, kafka_package=shaded)["sasl.jaas.config"]
    assert jaas.startswith(f"{shaded}.common.security.scram.ScramLoginModule required ")


def test_plain_sasl_over_plaintext_and_the_singular_mechanism_name():
    properties = java_client_properties({"security.protocol": "sasl_plaintext", "sasl.mechanism": "plain",
                                         "sasl.username": "u", "sasl.password": "p"})
    assert properties == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                          "sasl.jaas.config": 'org.apache.kafka.common.security.plain.PlainLoginModule required '
                                              'username="u" password="p";'}


def test_quotes_and_backslashes_in_a_password_are_escaped_for_the_jaas_parser():
    jaas = java_client_properties({**SCRAM, "sasl.password": 'a"b\\c'})["sasl.jaas.config"]
    assert jaas.endswith(' password="a\\"b\\\\c";')


def test_an_unauthenticated_broker_needs_nothing_but_its_address():
    assert java_client_properties({"bootstrap.servers": "127.0.0.1:9092"}) == {"bootstrap.servers": "127.0.0.1:9092"}


def test_tls_alone_with_an_inline_ca_and_no_host_name_check():
    properties = java_client_properties({"security.protocol": "SSL", "ssl.ca.pem": "-----BEGIN CERTIFICATE-----",
                                         "ssl.endpoint.identification.algorithm": "none"})
    assert properties == {"security.protocol": "SSL", "ssl.truststore.type": "PEM",
                          "ssl.truststore.certificates": "-----BEGIN CERTIFICATE-----",
                          "ssl.endpoint.identification.algorithm": ""}


@pytest.mark.parametrize("settings, message", [
    ({**SCRAM, "ssl.key.location": "/k.pem", "debug": "all"},
     r"the Kafka setting\(s\) debug, ssl.key.location have no translation to the Java client's properties"),
    ({**SCRAM, "security.protocol": "SASL_TLS"}, "security.protocol 'SASL_TLS' is none of PLAINTEXT, SSL"),
    ({**SCRAM, "sasl.mechanisms": "OAUTHBEARER"}, "the SASL mechanism OAUTHBEARER is not translated"),
    ({k: v for k, v in SCRAM.items() if k != "sasl.mechanisms"}, "the SASL mechanism GSSAPI is not translated"),
    ({**SCRAM, "sasl.mechanism": "SCRAM-SHA-256"}, "sasl.mechanism and sasl.mechanisms name different mechanisms"),
    ({k: v for k, v in SCRAM.items() if k != "sasl.password"},
     "SCRAM-SHA-512 signs in with sasl.username and sasl.password, but sasl.password is not set"),
    ({"security.protocol": "PLAINTEXT", "sasl.username": "u"},
     "sasl.username set, but security.protocol PLAINTEXT does not sign in"),
    ({"sasl.username": "u"}, "sasl.username set, but security.protocol PLAINTEXT does not sign in"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p",
      "ssl.ca.location": "/ca.pem"}, "ssl.ca.location set, but security.protocol SASL_PLAINTEXT has no TLS"),
    ({**SCRAM, "ssl.ca.pem": "PEM"}, "both ssl.ca.location and ssl.ca.pem are set"),
    ({**SCRAM, "ssl.ca.location": "probe"}, "ssl.ca.location=probe is not translated"),
    ({**SCRAM, "ssl.endpoint.identification.algorithm": "dns"}, "'dns' is neither https nor none"),
])
def test_what_cannot_be_translated_fails_in_one_sentence_without_the_password(settings, message):
    with pytest.raises(UnsupportedClientSetting, match=message) as error:
        java_client_properties(settings)
    assert "pa55-word" not in str(error.value) and "\n" not in str(error.value)


def test_the_secret_properties():
    assert is_secret("sasl.jaas.config") and is_secret("ssl.key.password") and is_secret("ssl.truststore.password")
    assert not any(is_secret(p) for p in ("security.protocol", "sasl.mechanism", "ssl.truststore.location",
                                          "ssl.truststore.certificates", "bootstrap.servers"))
