#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): prints nvidia-smi, then runs the check with the
# arguments given here and exits with its status (0 all stages ran, 1 one failed, 2 no CUDA).
#
#     bash benchmarks/gpu_check.sh            # from the repository root, on the CUDA machine
#
# The JSON goes to $OUT/gpu_check.json when $OUT is set, else benchmarks/gpu_check.json.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi || echo "gpu_check.sh: nvidia-smi failed (status $?)" >&2
else
    echo "gpu_check.sh: nvidia-smi not found" >&2
fi
.venv/bin/python benchmarks/gpu_check.py "$@"
exit $?
