#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels the GPU machine lacks, for its Python 3.12,
# into two folders that `run` carries (64 MiB at most per call, so they are split by step):
#   .whl_bench  transformers (the tested version; the image has 5.17), peft, bitsandbytes (QLoRA), choix (tests)
#   .whl_ds     deepspeed (built here: PyPI has only an sdist) and the packages it needs that the image lacks
# Usage, from the repository root:  bash eval/gpu/fetch_wheels.sh
# Versions are the ones the CPU suite was run with (pip list in .venv), so GPU figures compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude="$(git rev-parse --git-dir)/info/exclude"  # ignored here, yet carried by `run`
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
grep -qx '/.whl_bench/' "$exclude" || printf '/.whl_bench/\n/.whl_ds/\n' >> "$exclude"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
fetch() {  # folder, then NAME==VERSION ...
  local dir=$1; shift
  mkdir -p "$dir"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dir" "$@"
}
fetch .whl_bench transformers==5.23.0 peft==0.21.2 bitsandbytes==0.50.2 choix==0.4.1
fetch .whl_ds transformers==5.23.0 hjson pydantic pydantic-core annotated-types typing-inspection
python3 -m pip wheel -q --no-deps deepspeed==0.19.8 -w .whl_ds
du -sh .whl_bench .whl_ds
