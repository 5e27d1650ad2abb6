# The application. Ctrl-C on the console stops it and leaves the REPL for mpremote.
import fnode.app

fnode.app.run()
