# What every driver shares: the error a failed reading carries to the frame.


class ReadError(Exception):
    # code is what the frame's "err" field says: nack, crc, timeout, range, broken-loop, ...
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def bus_error(exc):
    # An OSError from the HAL as a ReadError: ENODEV (19) is an I2C NACK, ETIMEDOUT (116/110) a timeout.
    if isinstance(exc, ReadError):
        return exc
    errno = exc.args[0] if exc.args else 0
    if errno == 19:
        return ReadError("nack")
    if errno in (110, 116):
        return ReadError("timeout")
    return ReadError("bus")
