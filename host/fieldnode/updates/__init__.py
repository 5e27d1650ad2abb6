"""Over-the-air application updates (docs/updates.md): the image, the signed manifest, releases,
the offers the gateway makes, and the staged rollout. The node's side is firmware/lib/fnode/ota.py
and firmware/lib/fnboot.py."""
