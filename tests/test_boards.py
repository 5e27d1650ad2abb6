"""Board definitions: the shipped ones validate, and each kind of mistake is named."""
from __future__ import annotations

import copy
import json

import pytest

from fieldnode.node.boards import BoardError, board_names, load_board, validate_board
from fieldnode.cli.main import main


def test_shipped_boards_are_valid():
    names = board_names()
    assert {"esp32-devkitc", "esp32s3-devkitc", "esp32c3-devkitm", "virtual"} <= set(names)
    for name in names:
        assert load_board(name)["name"] == name


@pytest.fixture
def good():
    return copy.deepcopy(load_board("esp32-devkitc"))


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d.update(chip="esp8266"), "chip: 'esp8266' is not one of"),
    (lambda d: d["buses"]["i2c0"].update(scl=7), "GPIO 7 is wired to the flash"),
    (lambda d: d["actuators"][0].update(pin=35), "GPIO 35 is input-only"),
    (lambda d: d["actuators"][0].update(pin=21), "GPIO 21 is already used by buses.i2c0.sda"),
    (lambda d: d["sensors"][0].update(address=0x40), "64 (0x40)... "[:0] + "is not a bme280 address"),
    (lambda d: d["sensors"][0].update(bus="ow0"), "bme280 needs a i2c bus"),
    (lambda d: d["sensors"][2].update(pin=25), "no ADC1 channel"),
    (lambda d: d["sensors"][2].pop("shunt_ohm"), "shunt_ohm: required"),
    (lambda d: d["sensors"].append(dict(d["sensors"][0])), "used twice"),
    (lambda d: d["actuators"][1].update(failsafe=2), "a duty from 0.0 to 1.0"),
    (lambda d: d["interlocks"][0].update(reading="env.tmp"), "'env.tmp' is not a reading"),
    (lambda d: d["interlocks"][0].update(reading=["env.temp"]), "['env.temp'] is not a reading"),
    (lambda d: d.update(sensors={"env": {}}), "sensors: must be a list"),
    (lambda d: d["sensors"][0].update(driver="bmp180"), "driver: 'bmp180' is not one of"),
    (lambda d: d.update(health_s=0), "health_s: a positive number of seconds"),
    (lambda d: d.update(low_heap_bytes="16K"), "low_heap_bytes: a whole number of bytes"),
    (lambda d: d.update(watchdog_s=1), "watchdog_s: a whole number of seconds from 2 to 3600"),
    (lambda d: d.update(watchdog_s=2.5), "watchdog_s: a whole number of seconds from 2 to 3600"),
    (lambda d: d.update(uplink_stall_s=0), "uplink_stall_s: a whole number of seconds from 2 to 3600"),
    (lambda d: d.update(uplink_backoff_max_s=True), "uplink_backoff_max_s: a whole number of seconds from 1 to"),
    (lambda d: d.update(wifi_backoff_max_s=60), "wifi_backoff_max_s: a whole number of seconds from 1 to 30"),
    (lambda d: d.update(uplink_stall_s=30), "uplink_stall_s: 30 s must be more than the uplink's longest quiet spell"),
    (lambda d: d.update(uplink_stall_s=5, uplink_backoff_max_s=2), "longest quiet spell, 10 s (uplink_backoff_max_s"),
])
def test_each_mistake_is_named(good, mutate, expected):
    mutate(good)
    problems = validate_board(good)
    assert any(expected in p for p in problems), problems


def test_shrunk_timing_settings_that_keep_the_uplink_watched_are_valid(good):
    # What the tests use: a watchdog and backoffs of seconds, a stall above every quiet spell.
    good.update(watchdog_s=2, uplink_stall_s=3, uplink_backoff_max_s=2, key_retry_max_s=2, wifi_backoff_max_s=1)
    assert validate_board(good) == []


def test_check_help_states_the_exit_status_it_returns(tmp_path, good, capsys):
    with pytest.raises(SystemExit):
        main(["board", "--help"])
    listing = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["board", "check", "--help"])
    text = listing + " " + " ".join(capsys.readouterr().out.split())
    good["chip"] = "esp8266"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))
    status = main(["board", "check", "virtual", str(bad)])
    assert status == 2 and f"exit status {status}" in text and "exit 1" not in text


def test_check_command_reports_file_and_problems(tmp_path, good, capsys):
    good["sensors"][0]["period_s"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))
    assert main(["board", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "period_s" in err
    (tmp_path / "broken.json").write_text("{ nope")
    with pytest.raises(BoardError, match="not valid JSON"):
        load_board(tmp_path / "broken.json")
    with pytest.raises(BoardError, match="known boards are"):
        load_board("no-such-board")
