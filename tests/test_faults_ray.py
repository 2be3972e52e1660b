"""Ray addresses and resources a user gets wrong: refused in one line, nothing created."""

from __future__ import annotations

import socket

import pytest
import torch

from conftest import cli, refused, run_process, with_option

pytestmark = pytest.mark.xdist_group("ray")   # one worker runs every Ray test (`ray stop` stops them all)


# -- 8. Ray: an address where nothing listens ---------------------------------------------------------

def test_ray_address_where_nothing_listens_fails_at_the_connection(tmp_path, tiny):
    """Refused by the first connection attempt ("connection refused"), before Ray is asked to
    join: Ray itself would retry a dead address for ever."""
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    new = tmp_path / "new-run"
    line = refused(cli("grid", *tiny, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out", new),
                   "unreachable Ray address")
    assert f"cannot reach the Ray cluster at --address '127.0.0.1:{port}' (connection refused)" in line, line
    assert not new.exists()


def test_ray_address_where_something_else_listens_is_one_line(tmp_path, tiny):
    """A port that answers but is no Ray head: Ray's own retries (a warning a second) never
    reach the user; one line names the address, and nothing is created.  A real process: the
    join timeout is read from SCALESEARCH_RAY_JOIN_TIMEOUT_S when the command starts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    new = tmp_path / "new-run"
    try:
        proc = run_process("grid", *tiny, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out", new,
                           env={"SCALESEARCH_RAY_JOIN_TIMEOUT_S": "5"})
    finally:
        server.close()
    line = refused(proc, "a non-Ray listener")
    assert f"127.0.0.1:{port}" in line and "no Ray head answered within 5 s" in line, line
    assert not new.exists()


@pytest.mark.parametrize("option, value, what", [("backend.cpus_per_trial", "4096", "CPUs"),
                                                 ("backend.gpus_per_trial", "64", "GPUs")]
                         + ([] if torch.cuda.is_available() else [("--device", "cuda", "no GPU")]))
def test_ray_resources_beyond_this_machine_refused_before_any_file(tmp_path, tiny, option, value, what):
    new = tmp_path / "new-run"
    result = cli("grid", *with_option(with_option(tiny, "backend.cpus_per_trial", "2"), option, value),
                 "--backend", "ray", "--out", new)
    line = refused(result, option)
    assert f"{option} {value}" in line and what in line and "this machine" in line, line
    assert not new.exists()
