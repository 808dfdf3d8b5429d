"""The Kafka Java client's properties for the project's librdkafka settings.

Every connection and client settings file of the project holds librdkafka settings (the Kafka
provider's convention); the Flink CTR job's sources are Java clients, whose names and forms differ
(checked against Kafka's own ``SslConfigs``/``SaslConfigs`` and its security documentation):

==============================================  ==============================================
librdkafka                                      Java client
==============================================  ==============================================
``bootstrap.servers``                           ``bootstrap.servers``
``security.protocol`` (any case)                ``security.protocol`` (upper case; unset: PLAINTEXT)
``sasl.mechanism`` / ``sasl.mechanisms``        ``sasl.mechanism``
``sasl.username`` + ``sasl.password``           ``sasl.jaas.config``: the mechanism's login module
                                                (``ScramLoginModule``/``PlainLoginModule``)
``ssl.ca.location`` (a PEM file)                ``ssl.truststore.type=PEM`` + ``ssl.truststore.location``
``ssl.ca.pem`` (PEM text)                       ``ssl.truststore.type=PEM`` + ``ssl.truststore.certificates``
``ssl.endpoint.identification.algorithm``       the same name; librdkafka's ``none`` is Java's ``""``
==============================================  ==============================================

Anything else - client certificates, Kerberos, OAUTHBEARER, callbacks, tuning - is refused in one
sentence naming the setting (never its value), rather than dropped: a job that silently lost a
setting would sign in differently from the rest of the pipeline. This is the one place the two
spellings meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.errors import PermanentError

# Kafka's own package; a jar that relocates the client (Flink's SQL connector) names its own.
KAFKA_PACKAGE = "org.apache.kafka"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
LOGIN_MODULES = {
    "PLAIN": "common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "common.security.scram.ScramLoginModule",
}
TRANSLATED = ("bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username",
              "sasl.password", "ssl.ca.location", "ssl.ca.pem", "ssl.endpoint.identification.algorithm")


class UnsupportedClientSetting(PermanentError, ValueError):
    """A librdkafka setting the Java client's properties cannot carry; the message names it."""


def is_secret(java_property: str) -> bool:
    """Whether a Java client property holds a secret (the JAAS config holds the SASL password)."""
    return java_property == "sasl.jaas.config" or "password" in java_property or java_property == "ssl.keystore.key"


def _jaas_quoted(value: str) -> str:
    # Kafka parses sasl.jaas.config with a StreamTokenizer: a backslash escapes the next character.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_client_properties(settings: Mapping[str, Any], *, kafka_package: str = KAFKA_PACKAGE) -> dict[str, str]:
    """The Java client's properties for librdkafka ``settings`` (the table in the module doc).

    ``kafka_package`` is where the client's classes live in the jar that runs it: the login module
    in ``sasl.jaas.config`` is named by its class.
    """
    unknown = sorted(key for key in settings if key not in TRANSLATED)
    if unknown:
        raise UnsupportedClientSetting(
            f"the Kafka setting(s) {', '.join(unknown)} have no translation to the Java client's properties "
            f"(translated: {', '.join(TRANSLATED)})")
    text = {key: str(value).strip() for key, value in settings.items()}
    protocol = text.get("security.protocol", "plaintext").upper()
    if protocol not in PROTOCOLS:
        raise UnsupportedClientSetting(f"security.protocol {text['security.protocol']!r} is none of "
                                       f"{', '.join(PROTOCOLS)}")
    properties = {key: text[key] for key in ("bootstrap.servers",) if key in text}
    if "security.protocol" in text:  # unset, both clients speak PLAINTEXT
        properties["security.protocol"] = protocol
    properties.update(_sasl(text, protocol, kafka_package))
    properties.update(_tls(text, protocol))
    return properties


def _sasl(text: dict[str, str], protocol: str, kafka_package: str) -> dict[str, str]:
    sasl = sorted(key for key in text if key.startswith("sasl."))
    if not protocol.startswith("SASL_"):
        if sasl:
            raise UnsupportedClientSetting(f"{', '.join(sasl)} set, but security.protocol {protocol} does not sign in")
        return {}
    mechanisms = {text[key].upper() for key in ("sasl.mechanism", "sasl.mechanisms") if key in text}
    if len(mechanisms) > 1:
        raise UnsupportedClientSetting("sasl.mechanism and sasl.mechanisms name different mechanisms")
    # Without one librdkafka signs in with GSSAPI (its default), which needs a Kerberos set-up.
    mechanism = mechanisms.pop() if mechanisms else "GSSAPI"
    if mechanism not in LOGIN_MODULES:
        raise UnsupportedClientSetting(f"the SASL mechanism {mechanism} is not translated (only "
                                       f"{', '.join(LOGIN_MODULES)}, which sign in with sasl.username and sasl.password)")
    missing = [key for key in ("sasl.username", "sasl.password") if not text.get(key)]
    if missing:
        raise UnsupportedClientSetting(f"{mechanism} signs in with sasl.username and sasl.password, "
                                       f"but {' and '.join(missing)} is not set")
    module = f"{kafka_package}.{LOGIN_MODULES[mechanism]}"
    return {"sasl.mechanism": mechanism,
            "sasl.jaas.config": f"{module} required username={_jaas_quoted(text['sasl.username'])} "
                                f"password={_jaas_quoted(text['sasl.password'])};"}


def _tls(text: dict[str, str], protocol: str) -> dict[str, str]:
    tls = sorted(key for key in text if key.startswith("ssl."))
    if protocol not in ("SSL", "SASL_SSL"):
        if tls:
            raise UnsupportedClientSetting(f"{', '.join(tls)} set, but security.protocol {protocol} has no TLS")
        return {}
    properties: dict[str, str] = {}
    if "ssl.ca.location" in text and "ssl.ca.pem" in text:
        raise UnsupportedClientSetting("both ssl.ca.location and ssl.ca.pem are set; give the CA one way")
    if "ssl.ca.location" in text:
        # librdkafka's "probe" (look for the system's CA bundle) has no Java form: the JVM's own
        # trust store is used when no truststore is set.
        if text["ssl.ca.location"] == "probe":
            raise UnsupportedClientSetting("ssl.ca.location=probe is not translated; leave it out and the Java "
                                           "client trusts the JVM's own CA certificates")
        properties |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": text["ssl.ca.location"]}
    if "ssl.ca.pem" in text:
        properties |= {"ssl.truststore.type": "PEM", "ssl.truststore.certificates": text["ssl.ca.pem"]}
    if "ssl.endpoint.identification.algorithm" in text:
        algorithm = text["ssl.endpoint.identification.algorithm"].lower()
        if algorithm not in ("https", "none"):
            raise UnsupportedClientSetting(f"ssl.endpoint.identification.algorithm {algorithm!r} is neither "
                                           "https nor none")
        properties["ssl.endpoint.identification.algorithm"] = "" if algorithm == "none" else "https"
    return properties
