# The two commands of the README. Everything they need is installed by scripts/ from this repo.
.PHONY: run test bench
run:   ## set up and run the app on the embedded default (SQLite + file-system broker)
	./scripts/run
test:  ## set up and run the whole test suite against the real Postgres and Redis
	./scripts/test
bench: ## print the benchmark figures
	./scripts/bench
