# The two commands a new user needs are `make serve` and `make test`; the
# rest are the steps behind them and the longer jobs (models, benchmarks).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: serve serve-gpu gpu-setup test setup setup-test setup-system-tools lock models seed-models variants accuracy bench-models bench gpu-check profile protos soak container-check clean

$(VENV)/pyvenv.cfg:  # written when the venv is made, so a venv made again is newer than the install stamps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed once per change of pyproject.toml, constraints.txt or this file (a stamp in the venv): a restart of
# make serve needs no package registry. The package itself is editable, so code changes need no reinstall.
setup: $(VENV)/.installed-serve

$(VENV)/.installed-serve: pyproject.toml constraints.txt Makefile $(VENV)/pyvenv.cfg
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,variants]'
	touch $@

TRITON_VENV := .venv-triton

# constraints.txt again from what .venv holds now (after a dependency change has passed make test).
lock: setup-test
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --all --exclude-editable | grep -v '^torch==' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

setup-test: $(VENV)/.installed-test $(TRITON_VENV)/bin/perf_analyzer setup-system-tools

$(VENV)/.installed-test: pyproject.toml constraints.txt Makefile $(VENV)/pyvenv.cfg
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,train,test]'
	touch $@

setup-system-tools:
	@command -v promtool >/dev/null || { \
		command -v apt-get >/dev/null || { echo "the tests need Debian's prometheus (prometheus, promtool)"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }
	@command -v wrk >/dev/null || { \
		command -v apt-get >/dev/null || { echo "the tests and benchmarks need wrk"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@command -v chromedriver >/dev/null || { \
		command -v apt-get >/dev/null || { echo "the page's test needs Debian's chromium and chromium-driver"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# NVIDIA's tritonclient (and the perf_analyzer its wheel carries) pin an older
# protobuf than BentoML: they get their own environment. perf_analyzer needs
# libcudart (from PyPI) and Debian's libb64, even without a GPU.
$(TRITON_VENV)/bin/perf_analyzer:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet 'tritonclient[http,grpc]==2.51.0' nvidia-cuda-runtime-cu12
	@ldconfig -p | grep -q libb64.so.0d || { \
		command -v apt-get >/dev/null || { echo "perf_analyzer needs Debian's libb64-0d"; exit 1; }; \
		apt-get update -qq && apt-get install -y -qq libb64-0d; }

GRPC_PORT ?= 3001

# On a first start, derive the committed models' INT8 and FP16 files (not committed; 21 s on 2 cores),
# so precision: auto can time them and serve the fastest that is as accurate.
serve: setup
	$(BIN)/python -m cnnserve.training.variants --missing $(LATEST_COMMITTED)
	CNNSERVE_GRPC_HOST=127.0.0.1 CNNSERVE_GRPC_PORT=$(GRPC_PORT) \
		$(BIN)/bentoml serve cnnserve.serving.app:CnnServe --host 127.0.0.1 --port $(PORT)

test: setup-test
	$(BIN)/python -m pytest

COMMITTED_MODELS := lenet5-digits resnet18-digits vgg11-digits
LATEST_COMMITTED = $(foreach m,$(COMMITTED_MODELS),$(lastword $(sort $(wildcard models/$(m)/*))))

# Retrain and re-export the three committed models, then measure them through a real server on the
# robustness suite and write the results on their cards (about 2.5 hours on 2 cores; the cards say each one's).
models: setup-test
	for recipe in $(COMMITTED_MODELS); do \
		$(BIN)/python -m cnnserve.training train --recipe $$recipe --overwrite || exit 1; \
	done
	$(BIN)/python -m loadtests.accuracy --write-cards

# The seeds' other networks (AlexNet, GoogLeNet): too large to commit, so trained into models-seed/ (git-ignored)
# and measured there on the robustness suite (about 2.5 hours on 2 cores; README, "Training").
SEED_MODELS := alexnet-digits googlenet-digits
seed-models: setup-test
	for recipe in $(SEED_MODELS); do \
		$(BIN)/python -m cnnserve.training train --recipe $$recipe --out models-seed --overwrite || exit 1; \
	done
	$(BIN)/python -m loadtests.accuracy --models-dir models-seed --write-cards --out loadtests/results/$$(date +%F)-seed

# The derived INT8 and FP16 files of the committed models (never committed; training writes them too).
variants: setup
	$(BIN)/python -m cnnserve.training.variants $(LATEST_COMMITTED)

# The robustness suite against a fresh server on the committed models: per-condition accuracy and mean IoU
# through POST /predict (about 5 minutes); writes loadtests/results/<date>/accuracy.{md,json,png}.
accuracy: setup-test
	$(BIN)/python -m loadtests.accuracy $(ACCURACY_ARGS)

# Untrained ImageNet-shaped exports for throughput benchmarks (git-ignored).
bench-models: setup-test
	$(BIN)/python -m cnnserve.training bench-models --out models-bench

# On a GPU host, after make gpu-check: .venv-gpu/bin/python -m loadtests.bench --providers CUDAExecutionProvider
# (the CPU targets are skipped there). The benchmark (about 25 minutes; it derives the INT8 and FP16 files first, as
# make serve does, or precision auto would have only FP32 to choose): raw ONNX Runtime, every protocol at 1-64 clients with batching on and off,
# the FastAPI baseline, ResNet-50 at 224, and the targets; writes loadtests/results/<date>/bench.{md,json,png}.
bench: setup-test
	$(BIN)/python -m cnnserve.training.variants --missing $(LATEST_COMMITTED)
	@test -d models-bench || $(BIN)/python -m cnnserve.training bench-models --out models-bench
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

# On a host with an NVIDIA GPU (driver 580 or later): the GPU path checked end to end in its own environment
# (onnxruntime-gpu and the CPU package cannot share one): the provider really in use for every model, FP32 and FP16
# accuracy on the GPU against the cards, cuDNN's search modes, each server's answers against in process, in-process
# vs served throughput for ResNet-18 and ResNet-50 at 224 on a server with the shipping settings (GPU_CHECK_ARGS
# compares others: docs/operations.md, GPU status). Writes loadtests/results/<date>-gpu/; exits
# 1 on a fallback, an accuracy drop over 0.5 points or a served answer that differs.
GPU_VENV := .venv-gpu
gpu-check: gpu-setup
	$(GPU_VENV)/bin/pip install --quiet -e '.[gpu,train]' httpx aiohttp
	@command -v wrk >/dev/null || { command -v apt-get >/dev/null && apt-get update -qq >/dev/null 2>&1 && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; } || \
		echo "no wrk: the served load comes from Python processes, which take more of this host's cores per request"
	test -f models-bench/resnet50-imagenet-untrained/1/model.onnx || \
		$(GPU_VENV)/bin/python -m cnnserve.training bench-models --out models-bench --archs resnet50
	$(GPU_VENV)/bin/python -m loadtests.gpu_check $(GPU_CHECK_ARGS)

# make serve on a host with an NVIDIA GPU (driver 580 or later): its own environment with onnxruntime-gpu and
# NVIDIA's CUDA 13 and cuDNN 9 wheels (the CPU package cannot share one), the committed models' FP16 files
# derived (what precision: auto serves on a GPU), eight workers per GPU (docs/operations.md, serving on a GPU).
serve-gpu: gpu-setup
	CNNSERVE_GRPC_HOST=127.0.0.1 CNNSERVE_GRPC_PORT=$(GRPC_PORT) \
		$(GPU_VENV)/bin/bentoml serve cnnserve.serving.app:CnnServe --host 127.0.0.1 --port $(PORT)

gpu-setup:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install --quiet -e '.[gpu,variants]'
	$(GPU_VENV)/bin/python -m cnnserve.training.variants --only fp16 --missing $(LATEST_COMMITTED)

# Where a real server's CPU goes per request under wrk load, by layer (py-spy on every worker; about 1 minute);
# writes loadtests/results/<date>/profile-<model>-c<clients>.{md,json,png}.
profile: setup-test
	$(BIN)/python -m loadtests.bench.profile $(PROFILE_ARGS)

# A bounded soak run (not in CI): 70% of measured capacity for SOAK_MINUTES against a fresh server.
SOAK_MINUTES ?= 10
soak: setup-test
	$(BIN)/python -m loadtests.local_server -- $(BIN)/python -m loadtests.soak --url {url} --minutes $(SOAK_MINUTES)

# Build the CPU image with podman on a locally bootstrapped Debian base, run it, check it (not in CI: slow).
container-check: setup-test
	@command -v podman >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap; }
	bash deploy/podman-build.sh

# Regenerate the gRPC stubs from cnnserve/serving/v2/proto/inference.proto (they are committed).
protos: setup-test
	$(BIN)/pip install --quiet grpcio-tools==1.85.1  # the stubs name their generator; newer would demand a newer grpcio
	$(BIN)/python -m grpc_tools.protoc -Icnnserve/serving/v2/proto --python_out=cnnserve/serving/v2 --pyi_out=cnnserve/serving/v2 \
		--grpc_python_out=cnnserve/serving/v2 cnnserve/serving/v2/proto/inference.proto
	sed -i 's/^import inference_pb2 as/from . import inference_pb2 as/' cnnserve/serving/v2/inference_pb2_grpc.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) models-bench runs .pytest_cache
