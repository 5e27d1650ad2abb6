"""The command line: argument parsing (main.py), options every command shares (options.py) and
one module per command (commands/). It only translates arguments; the work is in the layers below."""
