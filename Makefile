# The two commands of the README. Everything they need is installed by scripts/ from this repo.
.PHONY: run test lint bench
run:   ## set up and run the app on the embedded default (SQLite + file-system broker)
	./scripts/run
test:  ## set up and run the whole test suite against the real Postgres and Redis
	./scripts/test
lint:  ## ruff (lint + format) and mypy, as the test command runs them first
	./scripts/lint
bench: ## print the benchmark figures
	./scripts/bench
