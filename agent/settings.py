"""Agent settings, read in one place from command-line flags and environment variables.

Every option has a flag and a ``SHAPEFARM_AGENT_*`` variable; a flag wins over
the variable, the variable over the default. Nothing else in the agent reads
``os.environ``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.schedule import ScheduleError, parse_schedule

ENV_PREFIX = "SHAPEFARM_AGENT_"
MAX_URLS = 16  # coordinator endpoints one agent may list
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

OnStop = Literal["finish", "cancel"]


class SettingsError(ValueError):
    """A missing or invalid setting; the message names the flag and the variable."""


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _default_data_dir(platform: str = sys.platform) -> Path:
    """The platform's per-user data directory: XDG on Linux, AppData, Application Support."""
    if platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shapefarm-agent"


def data_dir_from(flag: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The data directory as the agent resolves it: flag, then variable, then default."""
    env = os.environ if environ is None else environ
    value = flag or env.get(ENV_PREFIX + "DATA_DIR")
    return Path(value) if value else _default_data_dir()


@dataclass(frozen=True, slots=True)
class AgentSettings:
    url: str
    token: Secret
    model: str = "openai/shap-e"
    device: str = "auto"
    max_batch: int = 4
    data_dir: Path = Path("shapefarm-agent")
    spool_dir: Path = Path("shapefarm-agent/spool")
    cache_dir: Path | None = None
    offline: bool = False
    frame_size: int = 64
    heartbeat_s: float | None = None
    ca_file: Path | None = None
    log_level: str = "INFO"
    on_stop: OnStop = "finish"
    # Owner controls (docs/agent.md "Owner controls")
    schedule: str | None = None
    blocklist: Path | None = None
    yield_gpu: bool = False
    gpu_busy_percent: int = 30
    gpu_other_mb: int = 256
    gpu_quiet_s: float = 120.0
    pause_batch: OnStop = "finish"
    prefer_own: bool = False
    prefer_users: tuple[str, ...] = ()
    max_steps: int | None = None
    vram_cap_mb: int | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """The coordinator endpoints, tried in turn after a lost connection: ``url`` may
        list several, comma-separated (replicas reached without a shared proxy)."""
        return tuple(part.strip() for part in self.url.split(",") if part.strip())

    def __post_init__(self) -> None:
        if not 1 <= len(self.urls) <= MAX_URLS:
            raise SettingsError(f"--url / {ENV_PREFIX}URL: give 1 to {MAX_URLS} URLs")
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise SettingsError(
                    f"--url / {ENV_PREFIX}URL must be a ws:// or wss:// URL with a host, "
                    f"e.g. wss://farm.example.org/agent/ws (got {url!r})"
                )
            if self.ca_file is not None and parts.scheme != "wss":
                raise SettingsError("--ca-file only makes sense with a wss:// URL")
        if not self.token.get_secret_value():
            raise SettingsError(f"the agent token is empty (--token-file / {ENV_PREFIX}TOKEN)")
        if not 1 <= self.max_batch <= 64:
            raise SettingsError(f"--max-batch must be between 1 and 64 (got {self.max_batch})")
        if not 8 <= self.frame_size <= 512:
            raise SettingsError(f"--frame-size must be between 8 and 512 (got {self.frame_size})")
        if self.heartbeat_s is not None and not 0 < self.heartbeat_s <= 3600:
            raise SettingsError(f"--heartbeat must be in (0, 3600] s (got {self.heartbeat_s})")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(_LOG_LEVELS)}")
        if self.on_stop not in ("finish", "cancel"):
            raise SettingsError("--on-stop must be 'finish' or 'cancel'")
        if self.pause_batch not in ("finish", "cancel"):
            raise SettingsError("--pause-batch must be 'finish' or 'cancel'")
        if self.schedule is not None:
            try:
                parse_schedule(self.schedule)
            except ScheduleError as exc:
                raise SettingsError(f"--schedule: {exc}") from None
        if not 1 <= self.gpu_busy_percent <= 100:
            raise SettingsError("--gpu-busy-percent must be between 1 and 100")
        if not 0 <= self.gpu_other_mb <= 1 << 20:
            raise SettingsError("--gpu-other-mb must be between 0 and 1048576")
        if not 0 <= self.gpu_quiet_s <= 86400:
            raise SettingsError("--gpu-quiet must be between 0 and 86400 seconds")
        if len(self.prefer_users) > 32 or any(not 1 <= len(u) <= 64 for u in self.prefer_users):
            raise SettingsError("--prefer-users: at most 32 user names of 1-64 characters")
        if self.max_steps is not None and not 1 <= self.max_steps <= 1024:
            raise SettingsError(f"--max-steps must be between 1 and 1024 (got {self.max_steps})")
        if self.vram_cap_mb is not None and not 256 <= self.vram_cap_mb <= 1 << 20:
            raise SettingsError("--vram-cap must be between 256 and 1048576 MB")


def _users(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {text!r}")


@dataclass(frozen=True, slots=True)
class _Option:
    name: str  # field of AgentSettings (and argparse dest)
    flag: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    is_flag: bool = False
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "url",
        "--url",
        "coordinator agent endpoint, ws:// or wss://…/agent/ws; several replicas' endpoints "
        "comma-separated (tried in turn after a lost connection)",
        metavar="URL",
    ),
    _Option("token", "--token", "agent token (prefer --token-file: flags show in `ps`)"),
    _Option("token_file", "--token-file", "file whose first line is the agent token", Path),
    _Option(
        "model",
        "--model",
        "'openai/shap-e' (text-to-3D), 'openai/shap-e-img2img' (image-to-3D), 'tiny', "
        "'tiny-img2img', a local model directory, or "
        "'instant[:delay=S,steps=N,size=BYTES,kind=image]' (no-GPU test generator); "
        "see 'models' below",
        default="openai/shap-e",
    ),
    _Option("device", "--device", "torch device: auto, cuda, cuda:1, cpu …", default="auto"),
    _Option("max_batch", "--max-batch", "most jobs run in one GPU pass", int, default=4),
    _Option("data_dir", "--data-dir", "agent state directory", Path, default=None),
    _Option("spool_dir", "--spool-dir", "unsent results (default: DATA_DIR/spool)", Path),
    _Option(
        "cache_dir", "--cache-dir", "model weights cache (default: the Hugging Face cache)", Path
    ),
    _Option(
        "offline",
        "--offline",
        "never download weights; use the cache only",
        _bool,
        default=False,
        is_flag=True,
    ),
    _Option(
        "frame_size", "--frame-size", "Shap-E render/marching-cubes grid size", int, default=64
    ),
    _Option("heartbeat_s", "--heartbeat", "heartbeat seconds, overriding the coordinator's", float),
    _Option("ca_file", "--ca-file", "CA bundle to verify a wss:// coordinator", Path),
    _Option("log_level", "--log-level", "DEBUG, INFO, WARNING or ERROR", str.upper, default="INFO"),
    _Option(
        "on_stop",
        "--on-stop",
        "on Ctrl-C/SIGTERM: 'finish' or 'cancel' the running batch",
        default="finish",
    ),
    _Option(
        "schedule",
        "--schedule",
        "working hours in local time, e.g. 'Mon-Fri 09:00-18:00,Sat-Sun 00:00-24:00'; "
        "outside them the agent pauses",
        metavar="HOURS",
    ),
    _Option(
        "blocklist",
        "--blocklist",
        "file of words/phrases (and 're:' regular expressions), one a line: matching "
        "jobs are declined and go to another agent",
        Path,
    ),
    _Option(
        "yield_gpu",
        "--yield-gpu",
        "pause while other programs use the GPU (needs nvidia-ml-py)",
        _bool,
        default=False,
        is_flag=True,
    ),
    _Option("gpu_busy_percent", "--gpu-busy-percent", "GPU load that counts as busy", int, 30),
    _Option("gpu_other_mb", "--gpu-other-mb", "GPU memory of other programs that counts", int, 256),
    _Option("gpu_quiet_s", "--gpu-quiet", "seconds the GPU must stay free to resume", float, 120.0),
    _Option(
        "pause_batch",
        "--pause-batch",
        "when working hours end or the GPU gets busy: 'finish' or 'cancel' the running batch",
        default="finish",
    ),
    _Option(
        "prefer_own",
        "--prefer-own",
        "run my own jobs first (the agent owner's account)",
        _bool,
        default=False,
        is_flag=True,
    ),
    _Option(
        "prefer_users",
        "--prefer-users",
        "comma-separated user names whose jobs this agent runs first",
        _users,
        default=(),
        metavar="NAMES",
    ),
    _Option("max_steps", "--max-steps", "most diffusion steps per job this agent accepts", int),
    _Option(
        "vram_cap_mb",
        "--vram-cap",
        "GPU memory (MB) the agent may plan for; the batch size is chosen to fit",
        int,
        metavar="MB",
    ),
)


EPILOG = """\
models (--model): one agent runs one model and takes only the jobs of that kind
  openai/shap-e     the real text-to-3D model: several GB of weights, downloaded once
                    into the Hugging Face cache; a CUDA GPU with 8 GB or more is best
                    (CPU works, at minutes per model); takes text prompts
  openai/shap-e-img2img
                    the real image-to-3D model (same size and GPU needs): takes the
                    pictures users upload (PNG, JPEG, WebP) and makes a model of what
                    they show
  tiny, tiny-img2img
                    tiny randomly initialised Shap-E (text or image) built offline:
                    shapeless blobs, for tests of the whole path without weights
  random-full, random-full-img2img
                    full-size random weights, for benchmarks without the download
  DIR               a local directory holding a diffusers ShapEPipeline or
                    ShapEImg2ImgPipeline (told apart by its model_index.json)
  instant[:delay=S,steps=N,kind=image]
                    no model at all: a tetrahedron per job, for smoke tests

commands:
  shapefarm-agent pause [--cancel]   pause the running agent (finish or give back its
                                     batch); it takes no work until resumed
  shapefarm-agent resume             resume it
  shapefarm-agent doctor [FLAGS]     check Python, torch, the GPU, disk space, the
                                     coordinator and the token, and run a tiny test
"""


def build_parser(prog: str = "shapefarm-agent") -> argparse.ArgumentParser:
    """The agent's argument parser; ``--help`` names every flag's variable and default."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a shapefarm GPU agent: dial out to a coordinator and generate "
        "3D models with Shap-E. Every flag can also be set by its environment variable.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in _OPTIONS:
        shown = "" if option.default in (None, False, ()) else f"; default: {option.default}"
        text = f"{option.help} [env: {option.env}{shown}]"
        if option.is_flag:
            parser.add_argument(
                option.flag, dest=option.name, action="store_true", default=None, help=text
            )
        else:
            # Parsing happens in load_settings so flags and variables share one validator.
            parser.add_argument(
                option.flag, dest=option.name, default=None, help=text, metavar=option.metavar
            )
    return parser


def _read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read the token file {path}: {exc.strerror}") from exc
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def settings_from_namespace(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AgentSettings:
    """Merge parsed flags with the environment; raises :class:`SettingsError`."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.name, None)
        source = option.flag
        if raw is None and env.get(option.env) is not None:
            raw, source = env[option.env], option.env
        if raw is None:
            values[option.name] = option.default
            continue
        if isinstance(raw, bool):  # a store_true flag that was given
            values[option.name] = raw
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source}: {exc}") from exc

    url = values.pop("url")
    if url is None:
        raise SettingsError(f"the coordinator URL is required (--url or {ENV_PREFIX}URL)")
    token, token_file = values.pop("token"), values.pop("token_file")
    if token is not None and token_file is not None:
        raise SettingsError("give the token either directly or as a file, not both")
    if token_file is not None:
        token = _read_token_file(token_file)
    if token is None:
        raise SettingsError(
            f"an agent token is required (--token-file, --token, {ENV_PREFIX}TOKEN_FILE "
            f"or {ENV_PREFIX}TOKEN)"
        )
    data_dir = values.pop("data_dir") or _default_data_dir()
    spool_dir = values.pop("spool_dir") or data_dir / "spool"
    return AgentSettings(
        url=url, token=Secret(token), data_dir=data_dir, spool_dir=spool_dir, **values
    )


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> AgentSettings:
    """Parse ``argv`` (argparse exits 2 on a usage error) and the environment."""
    return settings_from_namespace(build_parser().parse_args(argv), environ)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, handler: logging.Handler | None = None) -> None:
    """Log to stderr; ``handler`` (the status line's) prints records above the live line."""
    if handler is None:
        logging.basicConfig(level=level, format=LOG_FORMAT)
        return
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
