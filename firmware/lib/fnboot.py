# The boot code that picks the application slot (docs/updates.md). It lives in /lib, outside the
# slots, and an update never replaces it: an update writes only into the inactive slot (/app_a or
# /app_b) and then replaces the pointer /app.json in one rename. USB (`fieldnode flash
# --app-only`) uses the same slots and the same pointer.
#
# /app.json: {"slot": "a"|"b"|"" ("" = the application in /lib, as before slots), "ver": "0.2.0",
#             "prev": the slot to go back to, "pver": its version,
#             "trial": 1 while the slot is on trial, "tries": boots started on trial,
#             "last": {"out": "kept"|"rolled-back"|"usb", "why": reason, "ver": version}}
# A slot on trial is kept when the application calls keep() (its first frame acked by the
# gateway). It is rolled back by this code, whatever the new application does: an exception at
# import or escaping run(), a watchdog reset, MAX_TRIAL_BOOTS boots without being kept (a boot
# loop), or no keep() within the board's update_trial_s (a timer armed before the application
# is imported).
import json
import machine
import os
import sys

POINTER = "/app.json"
TRIAL_S = 120  # board "update_trial_s"
MAX_TRIAL_BOOTS = 3
_TRIAL_TIMER = 0  # a hardware timer no driver uses; the ESP32-C3 has only 0 and 1
state = None  # the pointer's contents, None without slots
_timer = None


def read_state():
    try:
        with open(POINTER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_state(st):
    # Write the new pointer whole, then rename it over the old one: littlefs and POSIX replace
    # a file by rename atomically, so a power cut leaves the old pointer or the new one.
    tmp = POINTER + ".new"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    os.rename(tmp, POINTER)


def slot_path(slot):
    return "/app_" + slot


def roll_back(why):
    # The previous slot again, and a reset into it. Never returns.
    global state
    st = state
    print("fnboot: rolling back", st.get("ver"), "to", st.get("pver"), "-", why)
    state = {"slot": st.get("prev", ""), "ver": st.get("pver", "?"),
             "last": {"out": "rolled-back", "why": why, "ver": st.get("ver", "?")}}
    write_state(state)
    machine.reset()


def keep():
    # The application reached the gateway: the slot on trial becomes the one that boots.
    # -> True when a trial ended here.
    global state, _timer
    st = state
    if st is None or not st.get("trial"):
        return False
    if _timer is not None:
        _timer.deinit()
        _timer = None
    state = {"slot": st["slot"], "ver": st["ver"], "prev": st.get("prev", ""), "pver": st.get("pver", "?"),
             "last": {"out": "kept", "ver": st["ver"]}}
    write_state(state)
    return True


def on_trial():
    return state is not None and bool(state.get("trial"))


def _trial_boot():
    tries = state.get("tries", 0)
    if tries and machine.reset_cause() == machine.WDT_RESET:
        roll_back("watchdog")
    if tries >= MAX_TRIAL_BOOTS:
        roll_back("boot-loop")
    state["tries"] = tries + 1
    write_state(state)


def _trial_seconds():
    try:
        with open("board.json") as f:
            return json.load(f).get("update_trial_s", TRIAL_S)
    except (OSError, ValueError):
        return TRIAL_S


def _arm_deadline():
    global _timer
    _timer = machine.Timer(_TRIAL_TIMER)
    _timer.init(mode=machine.Timer.ONE_SHOT, period=_trial_seconds() * 1000,
                callback=lambda t: roll_back("no-ack") if on_trial() else None)


def start():
    # Reads the pointer, settles a trial boot, puts the slot first on the path.
    global state
    state = read_state()
    if state is None:
        return
    if state.get("trial"):
        _trial_boot()
    slot = state.get("slot")
    if slot:
        sys.path.insert(0, slot_path(slot))


def _failed(why, exc):
    sys.print_exception(exc)
    if on_trial():
        roll_back(why)
    raise exc


def run():
    start()
    if on_trial():
        _arm_deadline()
    try:
        import fnode.app as app
    except Exception as exc:  # KeyboardInterrupt (mpremote's Ctrl-C) is not a reason to go back
        _failed("import-error", exc)
    try:
        app.run()
    except Exception as exc:
        _failed("crash", exc)
