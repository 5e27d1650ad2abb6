# The updates' side of the running application on a node with slots (docs/updates.md): the boot
# frame's update records, the versions not to fetch again, the first ack on trial. Imported for
# each and forgotten after it (fnode.app.Node.aside), as the command path is; an offer imports
# fnode.ota alone (Node.update). What stays resident is a few lines of fnode.app and fnboot
# (docs/firmware.md, "Memory budget").
import sys
from fnode import log
from fnode.cose import KIND_EVENT
from fnode.sensors import unix_time


def at_boot(node, b, counter):
    # Into the boot frame being built (counter): which application (and firmware, after a
    # firmware update) runs and how the last update of each ended. Sets what take_offer skips,
    # and on trial waits for the gateway's ack of a frame from the boot frame on, the first made
    # by what is on trial (Node.trial_acked).
    boot = sys.modules["fnboot"]
    for names, s in (("app", "update", "why", "failed"), boot.state), \
            (("firmware", "fwupdate", "fwwhy", "fwfailed"), boot.fw_state):
        if s is None:
            continue
        b.add_str(names[0], s.get("ver", "?"))
        last = s.get("last") or {}
        b.add_str(names[1], "trial" if s.get("trial") else last.get("out", "none"))
        if last.get("why"):
            b.add_str(names[2], last["why"])
            b.add_str(names[3], last.get("ver", "?"))
    node.known = known(boot)
    if boot.on_trial() and node.uplink.spool is not None:  # a node meant for a gateway
        node.first = counter
        node.uplink.on_acked = node.trial_acked


def known(boot):
    # -> the versions (bytes) an offer of which is not fetched: what runs, what failed before.
    out = []
    for st in boot.state, boot.fw_state:
        if st:
            last = st.get("last") or {}
            for ver in st.get("ver"), last.get("ver") if last.get("out") == "rolled-back" else None:
                if ver:
                    out.append(ver.encode())
    return tuple(out)


def kept(node):
    # The gateway acked a frame of what is on trial: it becomes what boots (fnboot.keep).
    boot = sys.modules.get("fnboot")
    what = boot.keep() if boot is not None else None
    if what is None:
        return
    node.known = known(boot)
    log.info("update kept:", what[0], what[1])
    b = node.builder
    b.begin(KIND_EVENT, node.counter.take(), unix_time())
    b.add_str("event", "update.kept")
    b.add_str("app" if what[0] == "app" else "firmware", what[1])
    node.uplink.submit(b.finish())
