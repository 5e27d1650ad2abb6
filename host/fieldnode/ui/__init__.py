"""What a technician looks at: the monitor and the live view."""
