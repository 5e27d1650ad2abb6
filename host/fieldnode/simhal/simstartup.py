# The boot sequence simboot.py runs (see there): kept out of simboot's own globals, which
# boot.py, main.py and the REPL share, as a board's do.
import os
import sys


def _console():
    # A session leader that opens a tty without O_NOCTTY makes it its controlling terminal:
    # then the line discipline turns Ctrl-C into SIGINT (KeyboardInterrupt) while code runs.
    tty = os.getenv("FIELDNODE_SIM_TTY")
    if tty:
        open(tty, "rb").close()


def _flash():
    # Before anything reads the node directory: from here on host paths go through simroot.
    image = os.getenv("FIELDNODE_SIM_FLASH_IMAGE")
    directory = os.getenv("FIELDNODE_SIM_FLASH_DIR")
    if image or directory:
        import simroot
        simroot.mount_flash(directory, image)


def _exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _run(name, g):
    # -> True when the file ran to its end
    if not _exists(name):
        return True
    try:
        with open(name) as f:
            code = compile(f.read(), name, "exec")
        exec(code, g)
        return True
    except SystemExit:
        import simnode
        simnode.end("soft")
    except BaseException as exc:  # KeyboardInterrupt included: the REPL comes up, as on a board
        sys.print_exception(exc)
        return False


def _watchdog():
    # After a soft reset the ESP32's watchdog goes on where it was (machine.WDT); it was last fed
    # before the reset, so this is the latest it can fire.
    if os.getenv("FIELDNODE_SIM_RESET") == "soft":
        import simnode
        timeout = simnode.read_json(simnode.path("wdt.json"), {}).get("timeout")
        if timeout:
            import machine
            machine.WDT(timeout=timeout)


def _bootloader():
    # The second-stage bootloader's choice of app partition, on a node with OTA partitions.
    import simnode
    if simnode.config().get("partitions") == "ota":  # simota imported only there: heap is measured
        import simota
        simota.bootloader()


def boot(g):
    _console()
    _flash()
    _bootloader()
    _watchdog()
    if _run("boot.py", g) and os.getenv("FIELDNODE_SIM_SKIP_MAIN") != "1":
        _run("main.py", g)
