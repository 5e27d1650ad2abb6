"""One declaration per sensor driver: its board fields, its readings, its emulated chip.

A driver is three files, as an ESPHome component is one directory: the firmware driver
(firmware/lib/fnode/drivers/<name>.py: bytes in, readings out), the emulated chip the simulator
and the tests run it against (host/fieldnode/simhal/sim_<type>.py), and its declaration here
(<name>.py, a module-level DRIVER). The board check, the reading names and the simulator's wiring
loop over DRIVERS; a module here that declares a DRIVER joins it, so adding a driver edits no
other host file. docs/sensors.md, "Adding a sensor driver", walks through one.
"""
from __future__ import annotations

import importlib
import pkgutil

from .schema import SensorDriver


def _declared() -> dict[str, SensorDriver]:
    found: dict[str, SensorDriver] = {}
    for info in pkgutil.iter_modules(__path__):
        driver = getattr(importlib.import_module(f"{__name__}.{info.name}"), "DRIVER", None)
        if isinstance(driver, SensorDriver):
            found[driver.name] = driver
    return dict(sorted(found.items()))


DRIVERS: dict[str, SensorDriver] = _declared()

__all__ = ["DRIVERS", "SensorDriver"]
