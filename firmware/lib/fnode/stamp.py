# Tick stamps that survive the wrap. On the ESP32 time.ticks_ms() wraps at 2**30 ms (12.4 days) and
# ticks_diff() is right only within 2**29 ms (6.2 days): a stamp older than that reads as in the
# future, so a relay that held its state a week would refuse every change. Every stamp the node
# keeps for longer than a moment goes through age() once a second (app.Node.age_stamps, from the
# watchdog task, which runs or the node resets): a stamp older than OLD_MS is moved forward to
# exactly OLD_MS ago, so it never gets near 2**29 and still reads as "longer ago than any limit".
# Every duration compared with a stamp is below OLD_MS (the host's board validation checks it).
from micropython import const
from time import ticks_add, ticks_diff

OLD_MS = const(0x10000000)  # 2**28 ms: 3.1 days


def age(stamp, now):
    if stamp is not None and ticks_diff(now, stamp) > OLD_MS:
        return ticks_add(now, -OLD_MS)
    return stamp
