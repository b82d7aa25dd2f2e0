"""The user guides work as written: their Python runs, their commands parse, their links and make targets exist.

* Every Python block marked ``<!-- test: run -->`` runs in its own interpreter against a devnet and a gateway
  started here (real processes), with the guides' addresses (``ws://127.0.0.1:8080``, ``http://127.0.0.1:4943``)
  pointed at them; ``<!-- test: run NAME -->`` against a devnet hosting the guide's canister module ``NAME``.
* Every ``icws-gateway`` / ``icws-devnet`` command line (also as ``docker run``'s image) goes through the real
  parser and configuration checks, with its environment assignments: a typo'd flag or a refused value fails.
* Every ``make TARGET`` named exists in the Makefile; every relative link resolves, anchors included.
* The command lines, make targets and links of the recipes the guides link to (operations, deploy, devnet) too.
* Every flag table equals what the configuration renders today (``python -m tests.docs.guides`` rewrites them).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from icws_fast import cliconfig
from icws_fast.devnet.cli import DevnetConfig, _parser
from icws_fast.gateway.cli import build_parser
from icws_fast.gateway.config import GatewayConfig
from tests.docs import guides
from tests.docs.guides import GUIDES, RECIPES, REPO, Block
from tests.processes import DevnetProcess, GatewayProcess, child_env
from tests.tls import self_signed

GUIDE_GATEWAY_URL = "ws://127.0.0.1:8080"
GUIDE_IC_URL = "http://127.0.0.1:4943"
RUN_TIMEOUT_S = 120
_TLS_FLAGS = ("--tls-certificate-pem-path", "--tls-certificate-key-pem-path")


CHECKED = GUIDES + RECIPES


def _all_blocks(docs: tuple[Path, ...] = GUIDES) -> list[Block]:
    return [block for doc in docs for block in guides.blocks(doc)]


def _marked(kind: str) -> list[Block]:
    return [block for block in _all_blocks() if block.mark is not None and block.mark[0] == kind]


def _commands() -> list[guides.Command]:
    return [command for block in _all_blocks(CHECKED) for command in guides.commands(block)]


def _ids(items: list[Block]) -> list[str]:
    return [block.where() for block in items]


# -- what the guides hold (so that a broken reader cannot pass everything) ---------------------------------


def test_the_guides_exist_and_hold_what_the_checks_read() -> None:
    for guide in GUIDES:
        assert guide.is_file(), f"{guide.relative_to(REPO)} is missing"
    runnable = _marked("run")
    assert {block.guide.name for block in runnable} >= {"client.md", "cdk.md"}
    assert len(runnable) >= 6
    programs = [guides.program(command) for command in _commands()]
    assert sum(1 for p in programs if p and p[0] == "icws-gateway") >= 8
    assert any(p and p[0] == "icws-devnet" for p in programs)
    assert "icws-gateway" in guides.tables_in(REPO / "docs/gateway.md")


# -- flag tables --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", GUIDES, ids=[g.name for g in GUIDES])
def test_flag_tables_are_what_the_config_renders(guide: Path) -> None:
    renderers = guides.flag_tables()
    for command, table in guides.tables_in(guide).items():
        assert command in renderers, f"{guide.name}: no flag table for {command!r}"
        assert table == renderers[command](), (
            f"{guide.relative_to(REPO)}: the {command} flag table differs from the configuration;"
            " run `.venv/bin/python -m tests.docs.guides` to rewrite it"
        )


def test_the_flag_table_check_sees_a_stale_table(tmp_path: Path) -> None:
    # From the guide with today's table (whether or not the committed one is current), one default changed.
    current = tmp_path / "current.md"
    current.write_text((REPO / "docs/gateway.md").read_text(encoding="utf-8"), encoding="utf-8")
    guides.rewrite_tables(current)
    expected = current.read_text(encoding="utf-8")
    stale = tmp_path / "stale.md"
    stale.write_text(expected.replace("`10000`", "`5000`"), encoding="utf-8")
    assert guides.tables_in(stale)["icws-gateway"] != guides.flag_tables()["icws-gateway"]()
    assert guides.rewrite_tables(stale)
    assert stale.read_text(encoding="utf-8") == expected


# -- command lines --------------------------------------------------------------------------------------------


def _parse(name: str, args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    """Parse ``args`` as command ``name`` does, failing the test with argparse's message when it refuses them."""
    if name == "icws-gateway":
        cert = self_signed(tmp_path)  # the guides name certbot's paths: check the flags with real files
        args = [
            (str(cert.cert_path) if flag == _TLS_FLAGS[0] else str(cert.key_path))
            if index > 0 and (flag := args[index - 1]) in _TLS_FLAGS
            else arg
            for index, arg in enumerate(args)
        ]
        config_type: type = GatewayConfig
        parser = build_parser()
    else:
        config_type, parser = DevnetConfig, _parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            cliconfig.config_from_argv(config_type, parser, args, environ=env)
    except SystemExit as exc:
        if exc.code != 0:  # 0: --help
            pytest.fail(f"{name} {' '.join(args)}: {stderr.getvalue().strip()}")


@pytest.mark.parametrize("command", [c for c in _commands() if guides.program(c)], ids=lambda c: c.block.where())
def test_every_command_line_parses(command: guides.Command, tmp_path: Path) -> None:
    program = guides.program(command)
    assert program is not None
    _parse(*program, command.env, tmp_path)


def test_a_typo_in_a_command_line_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --max-client-per-ip"):
        _parse("icws-gateway", ["--max-client-per-ip", "10"], {}, tmp_path)
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --drain 5"):
        _parse("icws-gateway", ["--drain", "5"], {}, tmp_path)
    with pytest.raises(pytest.fail.Exception, match="RUST_LOG_FILE=loud"):
        _parse("icws-gateway", [], {"RUST_LOG_FILE": "loud"}, tmp_path)


@pytest.mark.parametrize("guide", CHECKED, ids=[g.name for g in CHECKED])
def test_every_make_target_named_exists(guide: Path) -> None:
    targets = guides.makefile_targets()
    assert {"run", "run-clean", "test"} <= targets
    missing = [(b.where() if b else guide.name, t) for b, t in guides.make_targets_named(guide) if t not in targets]
    assert not missing, f"make targets the Makefile lacks: {missing}"


# -- links ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", CHECKED, ids=[g.name for g in CHECKED])
def test_every_relative_link_resolves(guide: Path) -> None:
    broken = []
    for target in guides.links(guide):
        path_text, _, anchor = target.partition("#")
        path = (guide.parent / path_text).resolve() if path_text else guide
        if not path.exists():
            broken.append(f"{target}: no {path}")
        elif anchor and path.suffix == ".md" and anchor not in guides.anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{guide.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_anchors_are_github_slugs() -> None:
    slugs = guides.anchors(REPO / "docs/api.md")
    assert "icws_fastgatewayconfig" in slugs
    assert "candid--python-values-what-encode-takes-and-decode-returns" in slugs


# -- the Python blocks, run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("guides")
    for block in _marked("file"):
        name = block.mark[1] if block.mark else None
        assert name, f"{block.where()}: `test: file` needs a file name"
        (directory / name).write_text(block.text, encoding="utf-8")
    return directory


@contextlib.contextmanager
def _stack(directory: Path, module: str | None) -> Iterator[tuple[str, str]]:
    """A devnet (the demo canisters, or the one class of ``module``) and a gateway: their URLs."""
    extra: list[str] = []
    if module is not None:
        source = (directory / f"{module}.py").read_text(encoding="utf-8")
        classes = [line.split()[1].split("(")[0] for line in source.splitlines() if line.startswith("class ")]
        extra = ["--canister", f"{module}={module}:{classes[-1]}"]
    with DevnetProcess(extra_args=extra, env={"PYTHONPATH": str(directory)}) as devnet:
        gateway = GatewayProcess(devnet.url, directory / f"gateway-{module}").start()
        try:
            yield gateway.url, devnet.url
        finally:
            gateway.stop()


@pytest.fixture(scope="module")
def stacks(stack_dir: Path) -> Iterator[dict[str | None, tuple[str, str]]]:
    """One stack per canister the runnable blocks need, started once for the module."""
    with contextlib.ExitStack() as stack:
        modules = {block.mark[1] if block.mark else None for block in _marked("run")}
        yield {module: stack.enter_context(_stack(stack_dir, module)) for module in modules}


@pytest.mark.parametrize("block", _marked("run"), ids=_ids(_marked("run")))
def test_every_runnable_block_runs(block: Block, stacks: dict[str | None, tuple[str, str]], stack_dir: Path) -> None:
    assert block.info == "python", f"{block.where()}: only Python blocks run"
    assert GUIDE_IC_URL in block.text, f"{block.where()}: a runnable block talks to {GUIDE_IC_URL}"
    gateway_url, ic_url = stacks[block.mark[1] if block.mark else None]
    code = block.text.replace(GUIDE_GATEWAY_URL, gateway_url).replace(GUIDE_IC_URL, ic_url)
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=stack_dir,
        env=child_env({"PYTHONPATH": str(stack_dir)}),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert run.returncode == 0, f"{block.where()} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
