"""Node services: boards, keys, provisioning, the USB link to a node, commands to a node."""
