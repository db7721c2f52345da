# Everyday tasks. Each target is one command that also works typed by hand.
.PHONY: test test-quick lint format bench repro

test:            ## the whole suite, as CI runs it
	python -m pytest -q

test-quick:      ## everything but end-to-end dvc runs, torchrun processes and long trainings
	python -m pytest -q -m "not slow"

lint:            ## the rules pyproject.toml declares, and the format check
	ruff check .
	ruff format --check .

format:          ## apply ruff's formatting and safe fixes
	ruff format .
	ruff check --fix .

bench:           ## speed ratios on this machine (benchmarks/results.json)
	python benchmarks/speed.py

repro:           ## the pipeline
	dvc repro
