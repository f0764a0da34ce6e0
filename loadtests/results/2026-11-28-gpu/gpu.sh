#!/bin/bash
# One lent H100 call: setup, then phase A (make gpu-check's default: shared batches and CUDA graphs off/on),
# then phase B (ResNet-18 with 16 workers, shared batches off/on). Each phase stops itself in time.
exec > >(tee -a "$OUT/run.log") 2>&1
T0=$(date +%s); el() { echo "[+$(( $(date +%s) - T0 ))s] $*"; }
export CUDA_MODULE_LOADING=LAZY PYTHONUNBUFFERED=1
el setup; mkdir -p /tmp/site && tar xJf .gw/site.tar.xz -C /tmp/site || exit 1
for w in .gw/*.whl; do python3 -m zipfile -e $w /tmp/site; done; export PYTHONPATH=/tmp/site
cp .gw/wrk /usr/local/bin/wrk && cp .gw/libluajit-5.1.so.2 /usr/local/lib/ && ldconfig && wrk --version | head -1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
python3 -c "import onnxruntime as o, numpy, PIL; print(o.__version__, o.__file__, o.get_available_providers(), numpy.__version__, PIL.__version__)"
python3 -c "from bentoml_cli.cli import cli; import cnnserve.serving.app" || exit 1
el variants; python3 -m cnnserve.training.variants models/lenet5-digits/4 models/resnet18-digits/3 --only fp16 2>&1 | tail -3
sha256sum models/*/*/model*.onnx
grep -h '"sha256"' -A0 models/lenet5-digits/4/card.json models/resnet18-digits/3/card.json | head -8
el bench-models; test -f models-bench/resnet50-imagenet-untrained/1/model.onnx || python3 -m cnnserve.training bench-models --out models-bench --archs resnet50 2>&1 | tail -2
COMMIT=${COMMIT:-unknown}
if [[ ${PHASES:-AB} == *A* ]]; then
el phase A
timeout -s INT -k 15 ${A_SECONDS:-360} python3 -m loadtests.gpu_check --commit $COMMIT --models lenet5-digits resnet18-digits \
  --no-cudnn --seconds 3 --concurrency 1 64 256 --batch-sizes 1 8 64 256 --in-process-seconds 1 --out $OUT/a; echo "phase A rc=$?"
pkill -9 -f "bentoml" ; pkill -9 wrk; sleep 2
test -f $OUT/a/gpu-check.md || python3 -m loadtests.gpu_check --report-from $OUT/a/gpu-check.json > /dev/null
fi
if [[ ${PHASES:-AB} == *B* ]]; then
el phase B
timeout -s INT -k 15 ${B_SECONDS:-140} python3 -m loadtests.gpu_check --commit $COMMIT --no-accuracy --no-cudnn \
  --models resnet18-digits --throughput-models resnet18-digits --workers 16 --shared-batches off on --cuda-graphs off \
  --concurrency 64 256 --seconds 3 --batch-sizes 64 256 --in-process-seconds 1 --out $OUT/b; echo "phase B rc=$?"
pkill -9 -f "bentoml"; pkill -9 wrk
test -f $OUT/b/gpu-check.md || python3 -m loadtests.gpu_check --report-from $OUT/b/gpu-check.json > /dev/null
fi
if [[ ${PHASES:-AB} == *C* ]]; then
el phase C
timeout -s INT -k 15 ${C_SECONDS:-220} python3 -m loadtests.gpu_check --commit $COMMIT --no-accuracy --no-cudnn \
  --models resnet18-digits --workers ${C_WORKERS:-2 8} --shared-batches off --cuda-graphs on \
  --concurrency 64 256 --seconds ${C_SECS:-3} --batch-sizes 64 256 --in-process-seconds 1 --out $OUT/c; echo "phase C rc=$?"
pkill -9 -f "bentoml"; pkill -9 wrk
test -f $OUT/c/gpu-check.md || python3 -m loadtests.gpu_check --report-from $OUT/c/gpu-check.json > /dev/null
fi
if [[ ${PHASES:-AB} == *D* ]]; then
el phase D
timeout -s INT -k 10 ${D_SECONDS:-150} python3 -m loadtests.gpu_check --commit $COMMIT --models lenet5-digits resnet18-digits \
  --no-cudnn --seconds 3 --batch-sizes 1 8 64 256 --in-process-seconds 1 --out $OUT/d; echo "phase D rc=$?"
pkill -9 -f "bentoml"; pkill -9 wrk
test -f $OUT/d/gpu-check.md || python3 -m loadtests.gpu_check --report-from $OUT/d/gpu-check.json > /dev/null
fi
el done; ls -la $OUT $OUT/a $OUT/b
