"""Checks that a service really answers, not only that its port is open."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import struct
import urllib.error
import urllib.request
from pathlib import Path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def kafka_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0,
                  tls: ssl.SSLContext | None = None) -> bool:
    """Send a Kafka ApiVersions request (v0) and expect error code 0 back.

    This is the first request every Kafka client sends; a broker that answers it is serving the
    protocol, which a bare TCP connect to a still-starting broker does not prove. On a TLS listener
    (``tls``) it goes through the handshake first; SASL listeners answer ApiVersions before sign-in.
    """
    client_id = b"devstack"
    correlation_id = 7
    # Request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id.
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if tls is not None:
                sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
            sock.sendall(struct.pack(">i", len(header)) + header)
            size_bytes = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", size_bytes)
            body = _recv_exact(sock, size)
    except (OSError, ConnectionError):  # ssl.SSLError is an OSError
        return False
    got_correlation, error_code = struct.unpack(">ih", body[:6])
    return got_correlation == correlation_id and error_code == 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def http_json(url: str, timeout: float = 2.0):
    """GET url and return its JSON body, or None when it does not answer with 200 and JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            return json.loads(response.read() or b"null")
    except (OSError, ValueError, urllib.error.URLError):
        return None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def free_ports(count: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range, for a stack of its own (tests).

    A port handed out for port 0 is ephemeral: between this pick and the stack binding it (and
    across a restart) any other process on the machine may get it for a listener of its own.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = random.sample(range(20000, low), 200) if low > 21000 else []
    ports: list[int] = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    while len(ports) < count:  # a machine whose ephemeral range starts low
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] not in ports:
                ports.append(sock.getsockname()[1])
    return ports


def postgres_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """Send a PostgreSQL StartupMessage and expect the server to go on with authentication.

    This is what pg_isready does: a server that asks for credentials (or refuses this made-up user)
    accepts connections, while one still starting or shutting down answers SQLSTATE 57P03.
    """
    params = b"user\0devstack-probe\0database\0postgres\0\0"
    # Protocol 3.0; the length counts itself.
    startup = struct.pack(">ii", 8 + len(params), 196608) + params
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(startup)
            kind = _recv_exact(sock, 1)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            body = _recv_exact(sock, size - 4)
    except (OSError, ConnectionError):
        return False
    if kind == b"R":
        return True
    # An ErrorResponse: fields of a type byte and a NUL-terminated text; C is the SQLSTATE.
    fields = {field[:1]: field[1:] for field in body.split(b"\0") if field}
    return kind == b"E" and fields.get(b"C") != b"57P03"


def redis_answers(port: int, host: str = "127.0.0.1", password: str | None = None, timeout: float = 2.0) -> bool:
    """Send AUTH (when there is a password) and PING in Redis's protocol and expect +OK and +PONG.

    A Redis still loading its data answers -LOADING, one that wants another password -WRONGPASS or
    -NOAUTH: none of them is serving.
    """
    def command(*words: str) -> bytes:
        return f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(w.encode())}\r\n".encode() + w.encode() + b"\r\n" for w in words)

    request = (command("AUTH", password) if password else b"") + command("PING")
    expected = ([b"+OK"] if password else []) + [b"+PONG"]
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            received = b""
            while received.count(b"\r\n") < len(expected):
                chunk = sock.recv(1024)
                if not chunk:
                    return False
                received += chunk
    except OSError:
        return False
    return received.split(b"\r\n")[: len(expected)] == expected


def celery_worker_answers(broker_url: str, nodename: str, timeout: float = 2.0) -> bool:
    """Ping one Celery worker by its node name over the broker and expect its pong.

    The ping goes through the broker like a task, so a worker that answers is connected and
    taking messages, which its process being alive does not prove.
    """
    from celery import Celery
    from kombu.exceptions import OperationalError

    # One attempt: an unreachable broker is a "no", not a reason to wait.
    app = Celery(broker=broker_url, set_as_current=False,
                 broker_connection_retry=False, broker_connection_timeout=timeout)
    try:
        replies = app.control.ping(destination=[nodename], timeout=timeout)
    except (OSError, OperationalError):
        return False
    finally:
        app.close()
    return any(reply.get(nodename, {}).get("ok") == "pong" for reply in replies)
