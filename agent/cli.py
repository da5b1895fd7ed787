"""``shapefarm-agent``: load the generator, then serve a coordinator until stopped.

Exit codes: 0 clean exit, 1 could not start (model or spool), 2 usage error,
3 the coordinator refused the token.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent import stopping
from agent.generation import MAX_STEPS
from agent.settings import (
    AgentSettings,
    SettingsError,
    build_parser,
    configure_logging,
    settings_from_namespace,
)
from protocol import heap

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3

GeneratorFactory = Callable[[AgentSettings], Any]


def _log_loading(event: Any) -> None:
    total = f"/{event.total}" if event.total else ""
    logger.info("loading model: %s %d%s", event.stage, event.step, total)


def load_generator(settings: AgentSettings) -> Any:
    """Build and load the real Shap-E generator (imports torch: slow, so only here)."""
    from agent.generator import Generator, GeneratorConfig
    from agent.weights import fetch_weights, needs_download

    if not settings.offline and needs_download(settings.model):
        fetch_weights(settings.model, settings.cache_dir)  # WeightsError says what to do

    config = GeneratorConfig(
        model=settings.model,
        device=settings.device,
        offline=settings.offline,
        max_batch=settings.max_batch,
        frame_size=settings.frame_size,
        cache_dir=None if settings.cache_dir is None else str(settings.cache_dir),
    )
    generator = Generator(config)
    generator.load(_log_loading)
    return generator


async def serve(
    settings: AgentSettings,
    generator: Any,
    types: Any = None,
    max_steps: int = 64,
    status: Any = None,
) -> int:
    """Run the agent until Ctrl-C/SIGTERM or a refused token; returns the exit code."""
    import msgspec

    from agent.blocklist import BlocklistError
    from agent.connection import AgentClient, AuthenticationError
    from agent.controls import build_controls
    from agent.memory import cuda_memory_mb, fitting_batch
    from agent.runner import Runner
    from agent.spool import Spool
    from agent.wslink import capabilities_for

    try:
        spool = Spool(settings.spool_dir)
    except OSError as exc:
        logger.error("cannot use the spool directory %s: %s", settings.spool_dir, exc)
        return EXIT_FAILED
    device = generator.device_info
    memory = cuda_memory_mb(str(device.device))
    fit = fitting_batch(
        settings.max_batch,
        total_mb=memory[1] if memory else 0,
        free_mb=memory[0] if memory else None,
        cap_mb=settings.vram_cap_mb,
    )
    logger.info("batch size: %s", fit.why)
    runner = Runner(generator, spool, max_batch=fit.batch, types=types)
    runner.configured_batch = fit.batch
    runner.status = status
    try:
        controls = build_controls(settings, runner)
    except BlocklistError as exc:
        logger.error("%s", exc)
        return EXIT_FAILED
    steps = min(max_steps, settings.max_steps or max_steps)
    capabilities = msgspec.structs.replace(
        capabilities_for(device, settings, max_steps=steps), max_batch=fit.batch
    )
    client = AgentClient(settings, runner, capabilities, controls=controls)
    handlers = stopping.install(asyncio.get_running_loop(), client.stop)
    running = asyncio.ensure_future(client.run())
    try:
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            # Ctrl-C where no signal handler could be installed: asyncio.run cancels
            # this task. Stop as gracefully as a signal would, then return normally.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.info("interrupted: stopping")
            client.stop()
            await running
    except AuthenticationError as exc:
        logger.error("%s", exc)
        return EXIT_AUTH
    finally:
        handlers.remove()
        if status is not None:
            status.close()
    logger.info("agent stopped")
    return EXIT_OK


OWNER_COMMANDS = ("pause", "resume")


def owner_command(command: str, argv: Sequence[str], environ: Any = None) -> int:
    """``shapefarm-agent pause [--cancel]`` / ``resume``: write the running agent's control file."""
    from agent.controls import write_owner_pause
    from agent.settings import data_dir_from

    parser = argparse.ArgumentParser(
        prog=f"shapefarm-agent {command}",
        description="Pause the agent: it finishes (or with --cancel gives back) its running "
        "batch and takes no new work until 'shapefarm-agent resume'. Works on every OS; the "
        "running agent notices within a second, and the pause survives restarts."
        if command == "pause"
        else "Resume an agent paused with 'shapefarm-agent pause' or from the Contribute page.",
    )
    parser.add_argument("--data-dir", help="the agent's data directory (as given to the agent)")
    if command == "pause":
        parser.add_argument(
            "--cancel", action="store_true", help="stop the running batch; its jobs go back"
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    data_dir = data_dir_from(args.data_dir, environ)
    try:
        path = write_owner_pause(
            data_dir, paused=command == "pause", cancel=bool(getattr(args, "cancel", False))
        )
    except OSError as exc:
        print(f"shapefarm-agent {command}: cannot write to {data_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    done = "paused" if command == "pause" else "resumed"
    print(f"Agent {done} ({path}).")
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    generator_factory: GeneratorFactory | None = None,
    generator_types: Any = None,
) -> int:
    """Entry point; the keyword arguments let tests run it without torch."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in OWNER_COMMANDS:
        return owner_command(args_list[0], args_list[1:])
    if args_list and args_list[0] == "doctor":
        from agent.doctor import doctor_main

        return doctor_main(args_list[1:])
    parser = build_parser()
    try:
        args: argparse.Namespace = parser.parse_args(argv)
        settings = settings_from_namespace(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except SettingsError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from agent.statusline import StatusAwareHandler, StatusLine

    status = StatusLine()
    configure_logging(settings.log_level, StatusAwareHandler(status) if status.enabled else None)
    logger.info("starting agent for %s with model %s", settings.url, settings.model)
    max_steps = 64
    if generator_factory is None and settings.model.split(":")[0] == "instant":
        # Test/benchmark/smoke-test generator (agent/instant.py): no torch, no weights.
        from agent import instant

        generator_factory, generator_types, max_steps = instant.load, instant.TYPES, MAX_STEPS
    try:
        generator = (generator_factory or load_generator)(settings)
    except KeyboardInterrupt:
        return EXIT_FAILED
    except Exception as exc:
        # ModelLoadError and friends: say why plainly; a traceback helps at DEBUG only.
        logger.error("cannot load the model %s: %s", settings.model, exc)
        logger.debug("model load failure", exc_info=True)
        return EXIT_FAILED
    if generator_factory is None:
        max_steps = MAX_STEPS
    # After the model is loaded: results move through large short-lived buffers.
    heap.keep_freed_memory()
    try:
        return asyncio.run(serve(settings, generator, generator_types, max_steps, status))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        logger.warning("interrupted again: stopped without waiting for the batch")
        return EXIT_OK
