# Freezes the application into a MicroPython ESP32 image, so its bytecode runs from flash and stays
# out of the heap (docs/firmware.md, "Memory budget"). Not used by `fieldnode flash`, which writes
# the library as .mpy to the filesystem of a stock image. To build (ESP-IDF set up, MicroPython's
# source at the version the nodes run):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/fieldnode/firmware/manifest.py
# then flash the image with `fieldnode flash --firmware <build dir>/firmware.bin`. Frozen modules
# come before /lib on sys.path: an fnode .mpy left on the filesystem is not imported.
include("$(PORT_DIR)/boards/manifest.py")  # what the stock image freezes (asyncio, ntptime, ...)
package("fnode", base_path="lib")
