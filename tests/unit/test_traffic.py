"""The e2e tests' live client (tests/e2e/traffic.py) cannot die silently: whatever ends a request is a
failed request, and a client that stalls fails the minimum it promised."""
import time

import pytest

from tests.e2e.traffic import Traffic


def client(call, **rates) -> Traffic:
    traffic = Traffic(pair=None, tokens=["t1", "t2"], **rates)
    traffic._call = call
    return traffic


def test_any_exception_is_a_failed_request_and_the_client_goes_on():
    calls = []

    def call(method, path, token, body=None):
        calls.append(path)
        if len(calls) % 3 == 0:
            raise KeyError("id")  # neither OSError nor HTTPException: it used to end the thread
        return 200, b'{"id": "1"}', ""

    traffic = client(call, writes_per_second=50, reads_per_second=50).start()
    time.sleep(1)
    traffic.stop()
    failed = traffic.failures
    assert failed and all(r.error.startswith("KeyError") for r in failed)
    assert len(traffic.requests) > 2 * len(failed)  # both threads went on after their failures


def test_a_stalled_client_cannot_pass_as_no_failures():
    def call(method, path, token, body=None):
        time.sleep(0.6)
        return 200, b'{"id": "1"}', ""

    traffic = client(call, writes_per_second=20, reads_per_second=5).start()
    time.sleep(2)
    with pytest.raises(AssertionError, match=r"only \d+ writes in \d s at 20/s"):
        traffic.stop()
    assert traffic.failures == []
