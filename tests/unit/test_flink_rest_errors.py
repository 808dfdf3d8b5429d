"""How FlinkRestClient sorts the job manager's error answers: a server error to a reading is asked
again (retriable), a refusal is permanent. A tiny HTTP server on loopback plays the job manager."""

from __future__ import annotations

import http.server
import threading

import pytest

from include.ctr.flink_rest import FlinkJobError, FlinkRestClient, FlinkUnavailable

# What Flink 1.20/2.x answers to GET /jobs/<id>/checkpoints while its checkpoint statistics are empty.
STATS_500 = b'{"errors":["Internal server error.","<Exception on server side: NullArgumentException: input array"]}'


class _Answers(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        code, body = {"/jobs/j1/checkpoints": (500, STATS_500), "/jobs/j1/stop": (500, b'{"errors":["boom"]}'),
                      "/jobs/gone": (404, b'{"errors":["Job gone not found"]}')}.get(self.path, (200, b'{"ok": 1}'))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def rest():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield FlinkRestClient(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_a_server_error_to_a_reading_is_retriable(rest):
    with pytest.raises(FlinkUnavailable, match="answered 500 to GET .*asked again"):
        rest.latest_restore_point("j1")


def test_a_server_error_to_a_command_is_not_repeated(rest):
    # Stopping with a savepoint is not idempotent: a 500 there is reported, never sent twice.
    with pytest.raises(FlinkJobError, match="answered 500 to POST"):
        rest.trigger_stop("j1")


def test_an_unknown_job_is_none_and_a_good_answer_is_read(rest):
    assert rest.job("gone") is None
    assert rest._call("/config") == {"ok": 1}
