"""fieldnode host tools: flash, provision, monitor, decode, gateway and simulate ESP32 field nodes."""

__version__ = "0.1.0"
