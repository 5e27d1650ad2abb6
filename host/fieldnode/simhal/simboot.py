# What a board does after reset, for the unix port: run as `micropython -i simboot.py`, it
# takes the console pty as controlling terminal (so Ctrl-C from mpremote interrupts main.py as
# on a board), makes the flash (a directory or an image) its root, runs boot.py and then main.py from the
# flash, and leaves their globals to the REPL that -i starts. As on the ESP32 port, main.py runs
# only if boot.py succeeded, and not after a soft reset from the raw REPL.
# SystemExit from either file is a soft reset on the board: the process ends for the host to
# start the next boot with reset cause SOFT_RESET.
import simstartup

simstartup.boot(globals())
del simstartup
