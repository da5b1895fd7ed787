from __future__ import annotations

from coordinator.cli.main import main

raise SystemExit(main())
