"""Putting MicroPython and the fieldnode application on nodes: `fieldnode flash` lives here.

One job per module (the chips' data is fieldnode.node.chips): partitions (the table inside the firmware, and where the
filesystem goes), firmware (finding and checking the MicroPython image), compile (firmware/ to
.mpy), appimage (the littlefs image), ports (is a port usable), esplog (esptool's output per
port), serial_flash (one port through esptool), app_only (one port through mpremote), report
(progress bars and the summary), session (several ports at once).
"""
