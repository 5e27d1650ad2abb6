"""The node's CoAP client (firmware/lib/fnode/coap.py, uplink.py) against an independent CoAP server:
a virtual node provisioned with aiocoap's server on loopback as its gateway. What the server
received is read by aiocoap (its resource and, on the wire, aiocoap.Message.decode); frames are
verified by pycose with the key provisioning gave the node; the answers the node gets come from
aiocoap (piggybacked and separate responses, its duplicate handling) or from a tap built on
aiocoap's encoder (a Reset). No fieldnode CoAP code runs on the server side."""
from __future__ import annotations

from pathlib import Path

from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type
from pycose.headers import KID
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage

from fieldnode.node.keystore import Keystore
from fieldnode.sim.vnode import VirtualNode
from support.coap_oracle import (DROP, DUPLICATE, FORWARD, FROM_NODE, RESET, TO_NODE, AiocoapServer, Datagram,
                                 Tap, frame_counter, requests_of, start_node)

FRAMES = 4  # answered frames each scenario waits for (the node makes one a second)
WAIT_S = 90  # deadline for them: a retransmission comes after 2-3 s (RFC 7252 ACK_TIMEOUT)


def verified_by_pycose(frame: bytes, keys: Keystore, node: VirtualNode) -> bool:
    msg = CoseMessage.decode(frame)
    entry = keys.current(node.unique_id)
    assert msg.phdr[KID] == entry.kid  # the key id provisioning gave this node
    msg.key = SymmetricKey(k=entry.key)
    return msg.verify_tag()


def counters(requests) -> list[int]:
    return [frame_counter(r.payload) for r in requests]


def assert_each_frame_once_in_order(got: list[int]) -> None:
    # The node sends its queue oldest first, one exchange at a time, and a frame leaves the queue
    # once answered: the server's application sees every counter once, none skipped.
    assert len(got) >= FRAMES
    assert got == list(range(got[0], got[0] + len(got))), got


def first_of_each_mid(seen: list[Datagram]) -> list[Datagram]:
    out, mids = [], set()
    for d in requests_of(seen):
        if d.message.mid not in mids:
            mids.add(d.message.mid)
            out.append(d)
    return out


def answers(seen: list[Datagram], mtype: Type) -> list[Datagram]:
    return [d for d in seen if d.direction == TO_NODE and d.message.mtype == mtype and d.message.code == Code.CHANGED]


def run_node(tmp_path: Path, tap: Tap, done, what: str) -> tuple[VirtualNode, Keystore, list[Datagram]]:
    node, keys = start_node(tmp_path, tap.address)
    try:
        seen = tap.wait(lambda seen: seen if done(seen) else None, WAIT_S, what)
    finally:
        node.stop()
    return node, keys, seen


def test_the_server_receives_confirmable_posts_of_frames_that_pycose_verifies(tmp_path):
    with AiocoapServer() as server, Tap(server.address) as tap:
        node, keys, seen = run_node(tmp_path, tap, lambda seen: len(answers(seen, Type.ACK)) >= FRAMES,
                                    "piggybacked answers")
        requests = server.requests()
    assert requests
    for r in requests:
        assert (r.mtype, r.code, r.rest_of_path, r.content_format) == (Type.CON, Code.POST, (), 17)
        assert len(r.token) == 4
        assert verified_by_pycose(r.payload, keys, node)
    assert len({r.token for r in requests}) == len(requests)  # a fresh token per request
    assert_each_frame_once_in_order(counters(requests))
    assert {d.message.opt.uri_path for d in requests_of(seen)} == {("f",)}  # on the wire, as aiocoap reads it
    # every piggybacked ACK carried the mid and token of a request of the node (read by aiocoap)
    asked = {(d.message.mid, d.message.token) for d in requests_of(seen)}
    assert all((d.message.mid, d.message.token) in asked for d in answers(seen, Type.ACK))


def test_a_separate_response_is_acknowledged_by_the_node_and_ends_the_exchange(tmp_path):
    # aiocoap answers after 0.5 s, past its EMPTY_ACK_DELAY: empty ACK first, the 2.04 as a CON later.
    def node_acked_separate_responses(seen):
        acks = {d.message.mid for d in seen if d.direction == FROM_NODE and d.message.mtype == Type.ACK}
        return len([d for d in answers(seen, Type.CON) if d.message.mid in acks]) >= FRAMES

    with AiocoapServer(delay=lambda counter: 0.5) as server, Tap(server.address) as tap:
        node, keys, seen = run_node(tmp_path, tap, node_acked_separate_responses, "acknowledged separate responses")
        requests = server.requests()
    assert_each_frame_once_in_order(counters(requests))
    by_token = {d.message.token: d for d in first_of_each_mid(seen)}
    for response in answers(seen, Type.CON):
        request = by_token[response.message.token]  # the token ties the separate response to its request
        at = seen.index(response)
        empty = [d for d in seen[:at] if d.direction == TO_NODE and d.message.mtype == Type.ACK
                 and d.message.code == Code.EMPTY and d.message.mid == request.message.mid]
        assert empty, "aiocoap sent its empty ACK before the separate response"
        node_ack = [d for d in seen[at:] if d.direction == FROM_NODE and d.message.mtype == Type.ACK
                    and d.message.mid == response.message.mid]
        if response is answers(seen, Type.CON)[-1] and not node_ack:
            continue  # the node stopped while its ACK to the last one was on the way
        assert node_ack, "the node acknowledged the separate response"
        assert (node_ack[0].message.code, node_ack[0].message.token, node_ack[0].message.payload) == \
               (Code.EMPTY, b"", b"")  # an empty ACK (RFC 7252 §5.2.2)


def test_a_reset_refuses_the_frame_and_the_node_goes_on_with_the_next(tmp_path):
    def reset_the_second_frame(direction, message, seen):
        firsts = first_of_each_mid(seen)
        if direction == FROM_NODE and message.code.is_request() and len(firsts) == 1 \
                and message.mid != firsts[0].message.mid:
            return RESET
        return FORWARD

    with AiocoapServer() as server, Tap(server.address, reset_the_second_frame) as tap:
        node, keys, seen = run_node(tmp_path, tap, lambda seen: len(answers(seen, Type.ACK)) >= FRAMES + 1,
                                    "answers after the reset")
        requests = server.requests()
        console = node.console_tail(1 << 20)
    (rst,) = [d for d in seen if d.message.mtype == Type.RST]
    assert rst.direction == TO_NODE and rst.message.code == Code.EMPTY
    firsts = first_of_each_mid(seen)
    reset = firsts[1]
    assert reset.message.mid == rst.message.mid
    refused = frame_counter(reset.message.payload)
    # not retransmitted, not sent again as a new exchange: refused for good, as the node logs
    assert [d for d in requests_of(seen) if frame_counter(d.message.payload) == refused] == [reset]
    assert b"gateway refused frame %d code -2" % refused in console
    got = counters(requests)
    assert refused not in got and got[0] == refused - 1
    assert_each_frame_once_in_order(got[1:])
    assert got[1] == refused + 1


def test_the_server_sees_a_retransmission_with_the_same_message_id_and_answers_it_once(tmp_path):
    # The tap loses aiocoap's answer to the second frame: the node sends the same message again,
    # and aiocoap's deduplication answers it from its cache without a second render.
    def lose_the_answer_to_the_second_frame(direction, message, seen):
        firsts = first_of_each_mid(seen)
        if direction == TO_NODE and len(firsts) == 2 and message.mid == firsts[1].message.mid \
                and not [d for d in seen if d.direction == TO_NODE and d.message.mid == message.mid]:
            return DROP
        return FORWARD

    with AiocoapServer() as server, Tap(server.address, lose_the_answer_to_the_second_frame) as tap:
        node, keys, seen = run_node(tmp_path, tap, lambda seen: len(answers(seen, Type.ACK)) >= FRAMES + 1,
                                    "answers after the lost one")
        requests = server.requests()
    second = first_of_each_mid(seen)[1]
    sent = [d for d in requests_of(seen) if d.message.mid == second.message.mid]
    assert len(sent) >= 2 and {d.data for d in sent} == {second.data}  # same mid, token and bytes
    assert [d.message.mtype for d in sent] == [Type.CON] * len(sent)
    replies = [d for d in answers(seen, Type.ACK) if d.message.mid == second.message.mid]
    assert len(replies) == len(sent) and len({d.data for d in replies}) == 1  # the cached answer
    assert_each_frame_once_in_order(counters(requests))  # rendered once: the server deduplicated


def duplicate_then_lose(answer_type: Type):
    """Duplicates the answer (of answer_type) to the node's second frame, then loses the first
    transmission of the third: a node that took the duplicate as the third frame's answer would
    never send that again."""
    def decide(direction, message, seen):
        firsts = first_of_each_mid(seen)
        if direction == TO_NODE and message.mtype == answer_type and message.code == Code.CHANGED \
                and len(firsts) == 2 and not answers(seen, answer_type)[1:]:
            return DUPLICATE
        if direction == FROM_NODE and message.code.is_request() and len(firsts) == 2 \
                and message.mid != firsts[1].message.mid:
            return DROP
        return FORWARD
    return decide


def assert_duplicate_taken_once(seen: list[Datagram], requests, answer_type: Type) -> None:
    firsts = first_of_each_mid(seen)
    second, third = firsts[1], firsts[2]
    dup = [d for d in answers(seen, answer_type) if d.message.token == second.message.token]
    assert [d.action for d in dup] == [DUPLICATE]  # the tap passed it on twice
    # the node waited for its own answer to the third frame: it sent it again, same message
    again = [d for d in requests_of(seen) if d.message.mid == third.message.mid]
    assert len(again) >= 2 and {d.data for d in again} == {third.data}
    assert_each_frame_once_in_order(counters(requests))


def test_a_duplicated_piggybacked_answer_is_taken_once(tmp_path):
    with AiocoapServer() as server, Tap(server.address, duplicate_then_lose(Type.ACK)) as tap:
        node, keys, seen = run_node(tmp_path, tap, lambda seen: len(answers(seen, Type.ACK)) >= FRAMES + 1,
                                    "answers after the duplicate")
        requests = server.requests()
    assert_duplicate_taken_once(seen, requests, Type.ACK)


def test_a_duplicated_separate_response_is_taken_once(tmp_path):
    with AiocoapServer(delay=lambda counter: 0.5) as server, \
            Tap(server.address, duplicate_then_lose(Type.CON)) as tap:
        node, keys, seen = run_node(tmp_path, tap, lambda seen: len(answers(seen, Type.CON)) >= FRAMES + 1,
                                    "separate responses after the duplicate")
        requests = server.requests()
    assert_duplicate_taken_once(seen, requests, Type.CON)
