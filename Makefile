.PHONY: install test lint docs quickstart

install:
	pip install torch==2.13.0
	pip install -e ".[dev,docs]"

test:
	python -m pytest tests -q

lint:
	ruff check . && ruff format --check .

docs:
	mkdocs build --strict

quickstart:
	trl-gta quickstart
