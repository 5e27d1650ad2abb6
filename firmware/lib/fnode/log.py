# Console logging gated by a level. Frame lines ("FN1 ...") are written by fnode.uplink, not here.
# The levels are private constants: folded where used, no module attribute, no interned name.
from micropython import const

_ERROR = const(1)
_WARN = const(2)
_INFO = const(3)
level = _INFO  # 1 error, 2 warnings, 3 information, 4 debug
_TAGS = ("", "E", "W", "I", "D")


def _log(lvl, args):
    if lvl <= level:
        print(_TAGS[lvl], *args)


def error(*args):
    _log(_ERROR, args)


def warn(*args):
    _log(_WARN, args)


def info(*args):
    _log(_INFO, args)
