"""Authentication for the stack's Kafka (KAFKA_AUTH=scram): SASL/SCRAM over TLS, with ACLs on.

What it makes, once, in ``<DEVSTACK_HOME>/kafka-auth/`` (the keys and passwords readable by their
owner only; nothing of it is in the repository):

* ``ca.pem`` - a certificate authority of this stack alone; clients trust it (``ssl.ca.location``);
* ``node.pem`` - every node's key and certificate (for 127.0.0.1 and localhost), signed by it;
* ``admin.password`` / ``pipeline.password`` - the SCRAM-SHA-512 passwords of the two principals,
  written into the cluster's metadata when its storage is formatted.

The nodes listen for clients on SASL_SSL (SCRAM over TLS); brokers talk to each other on the same
listener as ``admin``. The KRaft controllers' listener takes TLS with client certificates only, so
the nodes know each other by certificate (``User:CN=avazu-devstack-kafka``), and no one without the
node key reaches the controllers. The StandardAuthorizer refuses whatever no ACL allows; ``admin``
and the nodes are super users, and ``pipeline`` gets the ACLs that provisioning derives from the
topic catalog (include/kafka_admin/acls.py).
"""

from __future__ import annotations

import datetime
import os
import secrets
import ssl
from pathlib import Path

MECHANISM = "SCRAM-SHA-512"
ADMIN, PIPELINE = "admin", "pipeline"
PRINCIPALS = (ADMIN, PIPELINE)
NODE_SUBJECT = "avazu-devstack-kafka"
MODES = ("none", "scram")


def write_secret(path: Path, value: str | None = None) -> None:
    """Write a new random secret (or ``value``) to ``path``, readable by its owner only, unless
    the file exists already: a secret is made once and kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(value if value is not None else secrets.token_urlsafe(24))


class KafkaAuth:
    """The CA, the node certificate and the principals' passwords of one stack (module doc)."""

    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def node_file(self) -> Path:
        return self.folder / "node.pem"

    def password_file(self, principal: str) -> Path:
        return self.folder / f"{principal}.password"

    def password(self, principal: str) -> str:
        return self.password_file(principal).read_text().strip()

    def ensure(self) -> None:
        """Make what is missing; what exists is kept (the cluster's metadata holds the passwords)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        for principal in PRINCIPALS:
            write_secret(self.password_file(principal))
        if not (self.ca_file.exists() and self.node_file.exists()):
            ca_pem, node_pem = _certificates()
            self.ca_file.write_text(ca_pem)
            self.node_file.unlink(missing_ok=True)
            write_secret(self.node_file, node_pem)

    def format_arguments(self) -> list[str]:
        """kafka-storage format's arguments that put both principals' SCRAM credentials in the
        cluster's first metadata (brokers authenticate each other as admin from the start)."""
        return [argument for principal in PRINCIPALS for argument in
                ("--add-scram", f"{MECHANISM}=[name={principal},password={self.password(principal)}]")]

    def broker_properties(self, host: str, port: int, controller_port: int) -> list[str]:
        """server.properties lines of one node: its listeners, TLS, SASL and the authorizer."""
        return [
            f"listeners=SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            f"advertised.listeners=SASL_SSL://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_SSL",
            "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config="
            f'org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="{ADMIN}" password="{self.password(ADMIN)}";',
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.node_file}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            "listener.name.controller.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN};User:CN={NODE_SUBJECT}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def client_config(self, principal: str) -> dict[str, str]:
        """librdkafka settings (beside bootstrap.servers) of a client signing in as ``principal``."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM,
            "sasl.username": principal,
            "sasl.password": self.password(principal),
            "ssl.ca.location": str(self.ca_file),
        }

    def probe_context(self) -> ssl.SSLContext:
        """A TLS client context trusting the stack's CA: the readiness probe speaks TLS to the nodes."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _certificates() -> tuple[str, str]:
    """A new CA (its key is dropped: nothing more is ever signed) and the nodes' key + certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "avazu-devstack-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    node_key = ec.generate_private_key(ec.SECP256R1())
    node = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NODE_SUBJECT)]))
            .issuer_name(ca_name).public_key(node_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            # Both ends of a TLS connection: nodes serve clients and call each other's controllers.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    # Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain (the node's, then the CA's).
    node_pem = (node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
                + node.public_bytes(pem).decode() + ca_pem)
    return ca_pem, node_pem
