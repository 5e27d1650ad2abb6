# ntptime for the virtual node, as frozen into the ESP32 port: time() asks an SNTP server,
# settime() sets the RTC from it. Here the server's time is the host's, reachable whenever the
# Wi-Fi link is up; with the link down the query times out as it would on the board.
import machine
import network
import time as _time

host = "pool.ntp.org"
timeout = 1


def time():
    if not network.link_up():
        raise OSError(110)  # ETIMEDOUT: no answer from host
    return int(_time._builtin.time()) - _time.epoch_shift()  # in the port's epoch, as micropython-lib's


def settime():
    tm = _time.gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
