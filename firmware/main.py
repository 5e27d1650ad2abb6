# The application, from the slot /app.json names (fnboot, docs/updates.md). Ctrl-C on the console
# stops it and leaves the REPL for mpremote.
import fnboot

fnboot.run()
