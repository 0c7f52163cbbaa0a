# Everything goes through the project's virtual env; `make setup` creates it.
PY      := .venv/bin/python
RECSYS  := .venv/bin/recsys
STAMP   := .venv/.installed
PROTOS  := protos/recsys_pb2.py protos/internal_pb2.py

.PHONY: setup protos data train features serve stop demo test lint bench bench-freshness bench-scale chaos loadtest clean

setup: $(STAMP) $(PROTOS)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Stubs are generated from protos/*.proto (public API, internal services), never edited.
$(PROTOS) &: protos/recsys.proto protos/internal.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. protos/recsys.proto protos/internal.proto

protos: $(PROTOS)

data: setup
	$(RECSYS) data fetch
	$(RECSYS) data load --mode upsert

train: setup
	$(RECSYS) train

features: setup
	$(RECSYS) features materialize

serve: setup
	$(RECSYS) serve all

stop:
	$(RECSYS) stop

# One command on a fresh machine: embedded PostgreSQL + Redis unless DATABASE_URL / REDIS_URL are set.
demo: setup
	$(RECSYS) demo

test: setup
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) -m loadtest.bench

# LogInteractions acknowledged -> Recommend and Feast features reflect it (stack running).
bench-freshness: setup
	$(PY) -m loadtest.freshness

# Each dependency killed in turn under load (stack running; docs/reliability.md; about 2 minutes).
chaos: setup
	$(PY) -m loadtest.chaos

# FAISS at 1M / 10M synthetic items and Retrieve over gRPC at 1M (docs/scale.md; minutes).
bench-scale: setup
	$(PY) -m loadtest.scale_bench

loadtest: setup
	$(PY) -m loadtest.run

clean:
	-$(RECSYS) stop
	rm -rf .venv var artifacts protos/*_pb2*.py protos/*_pb2*.pyi
