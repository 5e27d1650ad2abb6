# Console logging gated by a level. Frame lines ("FN1 ...") are written by fnode.uplink, not here.
from micropython import const

ERROR = const(1)
WARN = const(2)
INFO = const(3)
DEBUG = const(4)
level = INFO
_TAGS = ("", "E", "W", "I", "D")


def log(lvl, *args):
    if lvl <= level:
        print(_TAGS[lvl], *args)


def error(*args):
    log(ERROR, *args)


def warn(*args):
    log(WARN, *args)


def info(*args):
    log(INFO, *args)
