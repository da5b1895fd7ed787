# shapefarm developer commands. `make demo` and `make test` set up what they need first.
.PHONY: install demo test test-fast lint bench clean

install:
	@scripts/install

demo:
	@scripts/install --no-browser
	.venv/bin/shapefarm demo

test: install
	.venv/bin/python -m pytest -n 2 --dist worksteal

test-fast: install
	.venv/bin/python -m pytest -n 2 --dist worksteal -m "not browser and not slow"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check coordinator agent protocol scheduler meshkit webui client tests bench
	.venv/bin/mypy --strict coordinator agent protocol scheduler meshkit webui client

bench: install
	.venv/bin/python -m bench.fairness
	.venv/bin/python -m bench.generate --model tiny
	.venv/bin/python -m bench.dispatch
	.venv/bin/python -m bench.throughput
	.venv/bin/python -m bench.scale
	.venv/bin/python -m bench.fanout

clean:
	rm -rf .venv node_modules webui/static/vendor .pytest_cache .mypy_cache .ruff_cache
