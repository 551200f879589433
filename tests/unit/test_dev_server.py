"""bin/dev listens on loopback unless told otherwise (it allows private networks)."""

from pathlib import Path

from asyncqueue.dev.server import bind_address, dev_environment, parse_args, web_command


def test_bin_dev_listens_on_loopback_by_default():
    args = parse_args([])
    command = web_command(Path("/v/bin"), bind_address(args.host, "8000"))
    assert command[command.index("--bind") + 1] == "127.0.0.1:8000"


def test_bin_dev_can_be_told_to_listen_elsewhere():
    assert bind_address(parse_args(["--host", "0.0.0.0"]).host, "8000") == "0.0.0.0:8000"
    assert bind_address(parse_args(["--host", "::1"]).host, "9000") == "[::1]:9000"


def test_bin_dev_opens_loopback_only_unless_told_otherwise():
    assert dev_environment({})["ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS"] == "loopback"
    told = {"ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS": "true"}
    assert dev_environment(told)["ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS"] == "true"
