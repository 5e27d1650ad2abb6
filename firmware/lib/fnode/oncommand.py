# What the node does with a command frame (from the gateway's CoAP response or the USB console):
# read it with fnode.command, spend its counter, check the clock and the expiry, move the
# actuators, answer with an ack frame. Imported for each command with the rest of the command
# path and forgotten after it (fnode.app.Node.take_command): commands are rare, and a node at
# rest does not hold this code (docs/firmware.md, "Memory budget").
import time
from fnode import clock, log
from fnode.command import CommandReader, UNSPENT
from fnode.cose import KIND_ACK, Rejected
from fnode.sensors import unix_time


def handle(node, frame):
    # Only a command whose MAC verifies is answered: forged input never makes the node transmit.
    # The last counter applied is read from NVS, where spend() keeps it.
    cfg = node.cfg
    try:
        cmd = CommandReader(cfg.key(), cfg.kid(), cfg.alg(), last=cfg.i32("cmdctr", 0)).read(frame)
    except Rejected as exc:
        log.warn("command refused:", exc.reason)
        if exc.counter is not None:  # MAC verified: answer, naming the command's counter
            if exc.reason not in UNSPENT:  # a malformed command spends its counter too
                spend(node, exc.counter)
            ack(node, exc.counter, "refused", exc.reason)
        return
    if not spend(node, cmd.counter):  # before anything moves
        ack(node, cmd.counter, "refused", "nvs-error")
        return
    if not clock.valid():  # an unset clock cannot tell a fresh command from a delayed one
        ack(node, cmd.counter, "refused", "no-clock")
        return
    if unix_time() > cmd.exp:
        ack(node, cmd.counter, "refused", "expired")
        return
    node.uplink.last_ok = time.ticks_ms()  # a verified command is the gateway speaking too
    reason = node.actuators.command(cmd.items, time.ticks_ms())
    if reason is None:
        ack(node, cmd.counter, "applied", None)
    else:
        ack(node, cmd.counter, "refused", reason)


def spend(node, counter):
    # Kept in NVS, so that a replay after a reboot is refused too. -> False when it could not be
    # kept: the command is refused (applied, it could be replayed after a reboot), and the error
    # must not escape (a reset, and the gateway would bring the same command again).
    nvs = node.cfg.nvs
    try:
        nvs.set_i32("cmdctr", counter)
        nvs.commit()
    except OSError as exc:
        log.error("command counter not kept in NVS:", repr(exc))
        return False
    return True


def ack(node, counter, result, reason):
    b = node.builder
    b.begin(KIND_ACK, node.counter.take(), unix_time())
    b.add("ack", None, counter if counter is not None else 0)
    b.add_str("result", result)
    if reason is not None:
        b.add_str("reason", reason)
    node.uplink.submit(b.finish())
