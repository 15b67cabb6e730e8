"""Request ids are unique, unguessable and never shared between processes: each is also the
nonce of a signed upstream call, and a forked worker must not repeat its parent's."""

from __future__ import annotations

import os

import pytest

from gateway.proxy.exchange import new_request_id

pytestmark = pytest.mark.unit


def test_request_ids_are_req_and_96_random_bits_and_do_not_repeat() -> None:
    ids = [new_request_id() for _ in range(2000)]  # several refills of the batch
    assert len(set(ids)) == len(ids)
    for request_id in ids[:10]:
        assert request_id.startswith("req_") and len(request_id) == 4 + 24
        int(request_id[4:], 16)


def test_a_forked_child_does_not_hand_out_the_ids_its_parent_drew() -> None:
    new_request_id()  # the parent holds a batch it has not used yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read)
        os.write(write, ",".join(new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(300)}
    assert len(child) == 5 and not child & parent
