# The virtual node's side of the link to the host: where its files are, what it was built with
# (sim.json), why it booted, what its outputs show, and how it ends itself as a board's reset
# would. Every simulated HAL module imports this one; nothing here touches the firmware.
#
# Files in the node directory (FIELDNODE_SIM_NODE, else the current directory):
#   sim.json      written by the host before boot: identity, chip pin data, attached devices
#   world.json    written by the host at any time: what the sensors see (see simworld)
#   nvs.json      esp32.NVS contents, replaced atomically on commit
#   rtc.json      RTC memory and clock offset: survives resets, not power cuts (the host deletes it)
#   outputs.json  output pins and PWM channels as the firmware last set them
#   reset         written just before the process ends itself: why ("wdt", "hard", "soft",
#                 "deepsleep <ms>"); the host reads it to start the next boot with that cause,
#                 or "poweroff" (a power cut the host asked for, see writing()): it stays off
import os

import simroot

DIR = simroot.host_path(os.getenv("FIELDNODE_SIM_NODE") or os.getcwd())
RESET_FILE = DIR + "/reset"
_config = None
_outputs = None
_cut_in = None  # writes left before the power cut the host asked for (see writing)


def path(name):
    return DIR + "/" + name


def config():
    # sim.json, read once. A node started without one (a plain `micropython` run in a test)
    # has no devices and a fixed identity.
    global _config
    if _config is None:
        _config = read_json(path("sim.json"), {})
    return _config


def read_json(file, default):
    import json
    try:
        with open(file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_atomic(file, text):
    # Readers see the old file or the new one, never a torn one: a kill -9 between these steps
    # leaves at worst a stray .tmp. flush() is fsync() on the unix port, for host power losses.
    tmp = file + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
    os.rename(tmp, file)


def write_json(file, obj):
    import json
    write_atomic(file, json.dumps(obj))


def unique_id():
    uid = config().get("unique_id", "240ac4000001")
    import binascii
    return binascii.unhexlify(uid)


def reset_cause_name():
    # Set by the host for each boot: pwron, hard, wdt, deepsleep, soft.
    return os.getenv("FIELDNODE_SIM_RESET") or "pwron"


def chip_pins():
    # {"gpios": [...], "input_only": [...], "adc": [...]} for the board's chip, or None (no checks).
    return config().get("pins")


def end(reason, detail=None):
    # Ends the process now, as a hardware reset would: no exception the firmware could catch,
    # no cleanup. The host sees the process die and reads why from the reset file.
    text = reason if detail is None else reason + " " + str(detail)
    write_atomic(RESET_FILE, text)
    os.system("kill -9 $PPID")  # $PPID of the shell is this process (no os.getpid on the unix port)
    import time
    while True:
        time.sleep_ms(1000)


def writing():
    # Called just before each flash program and NVS write reaches its file. With world.json
    # "power_cut_after_writes": N the power goes just before the Nth write from the one where the
    # node first saw it (a value there at boot counts from the first write), so a test cuts a
    # write short at a point it names, not wherever a wall-clock kill happens to land.
    global _cut_in
    if _cut_in is None:
        import simworld  # here: simworld imports this module
        _cut_in = simworld.value("power_cut_after_writes")
        if _cut_in is None:
            return
    _cut_in -= 1
    if _cut_in <= 0:
        end("poweroff")


def soft_end():
    # A soft reset on the board is a SystemExit the REPL turns into a reboot; here the process
    # exits and the host starts the next boot with reset cause SOFT_RESET.
    write_atomic(RESET_FILE, "soft")
    raise SystemExit


def publish(kind, key, value):
    # Output state for the host to observe (outputs.json), written only when something changes.
    global _outputs
    if _outputs is None:
        _outputs = {"pins": {}, "pwm": {}}
    table = _outputs[kind]
    key = str(key)
    if table.get(key) == value:
        return
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
    write_json(path("outputs.json"), _outputs)
