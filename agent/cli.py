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
from agent.settings import (
    AgentSettings,
    SettingsError,
    build_parser,
    configure_logging,
    settings_from_namespace,
)

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
    settings: AgentSettings, generator: Any, types: Any = None, max_steps: int = 64
) -> int:
    """Run the agent until Ctrl-C/SIGTERM or a refused token; returns the exit code."""
    from agent.connection import AgentClient, AuthenticationError, capabilities_for
    from agent.runner import Runner
    from agent.spool import Spool

    try:
        spool = Spool(settings.spool_dir)
    except OSError as exc:
        logger.error("cannot use the spool directory %s: %s", settings.spool_dir, exc)
        return EXIT_FAILED
    runner = Runner(generator, spool, max_batch=settings.max_batch, types=types)
    capabilities = capabilities_for(generator.device_info, settings, max_steps=max_steps)
    client = AgentClient(settings, runner, capabilities)
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
    logger.info("agent stopped")
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    generator_factory: GeneratorFactory | None = None,
    generator_types: Any = None,
) -> int:
    """Entry point; the keyword arguments let tests run it without torch."""
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
    configure_logging(settings.log_level)
    logger.info("starting agent for %s with model %s", settings.url, settings.model)
    max_steps = 64
    if generator_factory is None and settings.model.split(":")[0] == "instant":
        # Test/benchmark/smoke-test generator (agent/instant.py): no torch, no weights.
        from agent import instant

        generator_factory, generator_types, max_steps = instant.load, instant.TYPES, 1024
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
        from agent.generation import MAX_STEPS as max_steps
    try:
        return asyncio.run(serve(settings, generator, generator_types, max_steps))
    except KeyboardInterrupt:  # a second Ctrl-C during the graceful stop
        logger.warning("interrupted again: stopped without waiting for the batch")
        return EXIT_OK
