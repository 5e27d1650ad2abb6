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
# import or escaping run(), a watchdog reset, _MAX_TRIAL_BOOTS (3) boots without being kept (a boot
# loop), or no keep() within the board's update_trial_s (a timer armed before the application
# is imported).
import json
import machine
import os
import sys
from micropython import const

POINTER = "/app.json"
FW_STATE = "/fw.json"  # the firmware tier's trial (fnode.otafw), confirmed here as the app's is
_TRIAL_S = const(120)  # default of board "update_trial_s"
_MAX_TRIAL_BOOTS = const(3)
_TRIAL_TIMER = const(0)  # a hardware timer no driver uses; the ESP32-C3 has only 0 and 1
state = None  # the pointer's contents, None without slots
fw_state = None  # /fw.json, None until a firmware update
_timer = None


def read_state(path=POINTER):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_state(st, path=POINTER):
    # Write the new pointer whole, then rename it over the old one: littlefs and POSIX replace
    # a file by rename atomically, so a power cut leaves the old pointer or the new one.
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    os.rename(tmp, path)


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
    # The application reached the gateway: what is on trial becomes what boots. -> ("app" or
    # "fw", the version kept) when a trial ended here, else None.
    global state, fw_state, _timer
    if _timer is not None:
        _timer.deinit()
        _timer = None
    st = fw_state
    if st is not None and st.get("trial"):
        import esp32
        esp32.Partition.mark_app_valid_cancel_rollback()  # the bootloader keeps the image now
        fw_state = {"ver": st["ver"], "label": st["label"], "last": {"out": "kept", "ver": st["ver"]}}
        write_state(fw_state, FW_STATE)
        return "fw", st["ver"]
    st = state
    if st is None or not st.get("trial"):
        return None
    state = {"slot": st["slot"], "ver": st["ver"], "prev": st.get("prev", ""), "pver": st.get("pver", "?"),
             "last": {"out": "kept", "ver": st["ver"]}}
    write_state(state)
    return "app", st["ver"]


def on_trial():
    return (state is not None and bool(state.get("trial"))) or (fw_state is not None and bool(fw_state.get("trial")))


def _fw_boot():
    # A firmware update on trial: running elsewhere than it was written means the bootloader
    # went back (the image was reset before it was confirmed): said in the state for the boot
    # frame. Still on it: a reset at the deadline lets the bootloader go back.
    global fw_state
    fw_state = read_state(FW_STATE)
    st = fw_state
    if st is None or not st.get("trial"):
        return
    import esp32
    label = esp32.Partition(esp32.Partition.RUNNING).info()[4]
    if label != st["label"]:
        fw_state = {"ver": st.get("pver", "?"), "label": label,
                    "last": {"out": "rolled-back", "why": "bootloader", "ver": st["ver"]}}
        write_state(fw_state, FW_STATE)


def _trial_boot():
    tries = state.get("tries", 0)
    if tries and machine.reset_cause() == machine.WDT_RESET:
        roll_back("watchdog")
    if tries >= _MAX_TRIAL_BOOTS:
        roll_back("boot-loop")
    state["tries"] = tries + 1
    write_state(state)


def _trial_seconds():
    try:
        with open("board.json") as f:
            return json.load(f).get("update_trial_s", _TRIAL_S)
    except (OSError, ValueError):
        return _TRIAL_S


def _deadline(t):
    if state is not None and state.get("trial"):
        roll_back("no-ack")
    elif on_trial():  # the firmware's: the bootloader takes it back at this reset
        print("fnboot: firmware", fw_state.get("ver"), "not confirmed in time; resetting")
        machine.reset()


def _arm_deadline():
    global _timer
    _timer = machine.Timer(_TRIAL_TIMER)
    _timer.init(mode=machine.Timer.ONE_SHOT, period=_trial_seconds() * 1000, callback=_deadline)


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
    _fw_boot()
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
