# Runs on the MicroPython unix port, started by fieldnode.sim.footprint (not imported by CPython):
# measures the heap of a node in phases and prints one JSON line. argv[1] names a JSON file (the
# unix port dies at start-up on an argument over 256 bytes), an object:
#   hal:      the simulated HAL's modules to import first (its share is measured apart)
#   hal_objects: the board's HAL objects, made once with the HAL (see below)
#   modules:  fnode modules to import one by one, dependencies first (the delta of each is its own)
#   run_ms:   > 0: then boot the application (fnode.app.main) and measure it after run_ms
#   frozen:   modules frozen in the firmware (asyncio) to import alone, in a run without the HAL
# Every figure is gc.mem_alloc() after gc.collect(), in bytes (the GC block is 4 words). The
# interned strings (qstrs) are counted apart: after each step a line "QSTR <step>" and then
# micropython.qstr_info()'s line (which it prints, and only prints), read by fieldnode.sim.footprint.
import gc
import json
import micropython
import sys

with open(sys.argv[1]) as f:
    args = json.load(f)
out = {"block": 4 * (8 if sys.maxsize > 2 ** 32 else 4)}


def used():
    gc.collect()
    return gc.mem_alloc()


def mark(step):
    print("QSTR", step)
    micropython.qstr_info()


base = used()
mark("base")
out["base"] = base  # the unix port's own use before anything is imported
out["total"] = gc.mem_free() + base  # the usable heap (-X heapsize less the GC's tables)
for name in args["hal"]:
    __import__(name)
_warm = []


def _hal_object(spec):
    # One HAL object of the board, made as the application makes it (fnode.sensors.Hardware).
    import machine
    kind = spec["kind"]
    if kind == "i2c":
        return machine.I2C(spec["id"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]), freq=spec["freq"])
    if kind == "uart":
        return machine.UART(spec["id"], baudrate=spec["baud"], tx=spec["tx"], rx=spec["rx"])
    if kind == "adc":
        adc = machine.ADC(machine.Pin(spec["pin"]))
        adc.atten(machine.ADC.ATTN_11DB)
        return adc
    if kind == "pwm":
        return machine.PWM(machine.Pin(spec["pin"]), freq=spec["freq"])
    if kind == "wlan":
        import network
        return network.WLAN(network.STA_IF)
    if kind == "nvs":
        import esp32
        return esp32.NVS(spec["namespace"])
    return machine.Pin(spec["pin"], machine.Pin.OUT if spec.get("out") else machine.Pin.IN)


if args["hal"]:
    import simdev
    simdev.devices()  # the board's emulated chips: on a board they are hardware
    # The simulated HAL builds its own tables on the first use of each kind of object (Python
    # here, static C objects on the ESP32 port): made once here, they are the HAL's share, and
    # the application's own objects then cost what an instance costs.
    for spec in args.get("hal_objects", ()):
        _warm.append(_hal_object(spec))
    # Pins, ADC channels and hardware I2C buses are static C objects on the ESP32 port: making
    # one returns the port's own (ports/esp32 machine_pin.c machine_pin_obj_table, machine_adc.c
    # madc_obj, machine_i2c.c machine_hw_i2c_obj), nothing from the heap. What the simulated
    # ones cost the application (an instance each, as many as the board makes) is the HAL's too.
    static = used()
    _more = [_hal_object(spec) for spec in args.get("hal_objects", ()) if spec["kind"] in ("pin", "adc", "i2c")]
    out["hal_static"] = used() - static
    _more = None
hal = used()
mark("hal")
out["hal"] = hal - base
out["free_after_hal"] = gc.mem_free()

modules = {}
for name in args["modules"]:
    before = used()
    __import__(name)
    modules[name] = used() - before
    mark(name)
out["modules"] = modules
frozen = used()
for name in args.get("frozen", ()):
    __import__(name)
if args.get("frozen"):
    out["frozen"] = used() - frozen
    mark("frozen")


def _buffers():
    # The application's long-lived buffers, from the classes that make them. (The uplink keeps no
    # receive buffer: each answer is one recv, a bytes object of its own, freed after it; the
    # console's line buffer lives only while a line is typed.)
    import os
    from fnode.frame import FrameBuilder
    from fnode.spool import Spool
    from fnode.uplink import Uplink
    uplink = Uplink(None, None)
    spool = Spool("footprint-spool")
    os.rmdir("footprint-spool")
    return {"frame builder": len(FrameBuilder(bytes(32), bytes(8))._buf), "CoAP exchange": len(uplink.ex.buf),
            "spool record": len(spool.buf)}


async def _measure_tasks(n):
    import asyncio

    async def idle():
        while True:
            await asyncio.sleep_ms(1000)

    before = used()
    tasks = [asyncio.create_task(idle()) for _ in range(n)]
    await asyncio.sleep_ms(0)
    per = (used() - before) // n
    for t in tasks:
        t.cancel()
    return per


def _path(name, modules):
    # A path imported for a moment and forgotten after it (fnode.app.forget_modules), done once as
    # the node does it: what it leaves (its interned names: qstrs are never freed) is in the
    # figure at rest, and what it holds meanwhile is measured.
    import fnode.app
    at_rest = used()
    mark("before " + name)
    before = set(sys.modules)
    for module in modules:
        __import__(module)
    out[name + "_path"] = used() - at_rest
    mark(name)
    out[name + "_modules"] = sorted(m for m in sys.modules if m not in before)
    fnode.app.forget_modules(before)


async def _measure_app(run_ms):
    import asyncio
    # The boot code stays resident, as on a board: main.py runs fnboot.run(), which reads the
    # slot pointer (none here) and imports the application.
    import fnboot
    fnboot.start()
    fnboot._fw_boot()
    import fnode.app
    task = asyncio.create_task(fnode.app.main())
    await asyncio.sleep_ms(run_ms)
    if "fnode.actuators" in sys.modules:
        # A node with actuators takes commands: their receiving side is imported for each one
        # and forgotten after it (fnode.app.Node.take_command).
        _path("command", ("fnode.oncommand",))
    if "fnode.spool" in sys.modules:
        # A node meant for a gateway takes updates: the update path is imported when the gateway
        # offers one and forgotten after it (fnode.app.Node.update); a firmware update imports
        # fnode.otafw too. A node with slots imports fnode.onupdate at boot (the boot frame's
        # update records) and for the first ack on trial (fnode.app.Node.aside).
        _path("slots", ("fnode.onupdate",))
        _path("update", ("fnode.ota",))
        _path("fwupdate", ("fnode.ota", "fnode.otafw"))
    # At rest: the least of five looks a quarter second apart. What the node holds for a moment
    # (frames in flight, an exchange, a spool write) comes and goes with the load of the machine
    # that runs it, and one look can catch kilobytes of it.
    running = used()
    for _ in range(4):
        await asyncio.sleep_ms(250)
        running = min(running, used())
    out["running"] = running - base  # the HAL's share included
    mark("running")
    out["free_running"] = gc.mem_free()
    out["loaded"] = sorted(k for k in sys.modules)
    print("FOOTPRINT " + json.dumps(out))
    task.cancel()
    raise SystemExit


if args.get("buffers"):
    out["buffers"] = _buffers()
if args.get("tasks"):
    import asyncio
    out["task"] = asyncio.run(_measure_tasks(args["tasks"]))
if args.get("run_ms"):
    import asyncio
    asyncio.run(_measure_app(args["run_ms"]))
print("FOOTPRINT " + json.dumps(out))
